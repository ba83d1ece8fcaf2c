"""One transformer policy (MoDE or DiT) for several robots: per-embodiment layers around a shared transformer.

Built by `Policy.build` when shape_meta has "embodiments" (a mixture of stores whose actions or
observations differ, training/mixture_data.py); the checkpoint keeps the base policy's name and config.

    shared         goal encoder (every store's tasks), one camera encoder per camera *slot* (by key name),
                   the diffusion transformer body (noise embedding, positions, blocks, final norm)
    per embodiment (one per store, by name) its state encoder over its own low-dim keys, `action_in`
                   (Da_k -> width) and `head` (width -> Da_k), and its normaliser statistics, kept in the
                   one normaliser under "<store>/<key>" (so the checkpoint holds each store's by name)

Token sequence, the same for every embodiment: [noise, goal, state tokens, camera slots..., actions].
An embodiment with fewer state tokens than the largest is padded with a learned "no state" token; a camera
slot its store lacks is masked: that slot's tokens are a learned "slot absent" embedding and its (padded)
pixels are never read. So an embodiment's layers take part only in the rows of its own store: a batch
without it gives them no gradient.

Training groups a batch's rows by store (`batch["store"]`) and runs each group through its embodiment's
layers; the group losses are averaged weighted by their row counts, so every row counts the same (the
mixture's weights act through sampling, data/mixture.py). Inference finds each row's store from its task
index (tasks are global across the mixture); `for_store(name)` gives the policy of one store, whose
actions have that store's dimension (what evaluation of one robot uses).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from data.normalize import Normalizer
from policies.base import CheckpointError, Policy
from policies.diffusion import EDM, Generators, goal_from_batch
from policies.encoders.goal import GoalEncoder
from policies.encoders.obs import ObsEncoder

_CLASSES: dict[type, type] = {}


class StoreNormalizer:
    """One store's view of the shared normaliser: key k of store s is "s/k"; camera keys are shared."""

    def __init__(self, normalizer: Normalizer, store: str) -> None:
        self.normalizer, self.store = normalizer, store
        self.maps = {k.split("/", 1)[1]: m for k, m in normalizer.maps.items() if k.startswith(store + "/")}

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return self.normalizer.normalize(f"{self.store}/{key}", x)

    def unnormalize(self, key: str, y: torch.Tensor) -> torch.Tensor:
        return self.normalizer.unnormalize(f"{self.store}/{key}", y)


def store_key(store: str, key: str) -> str:
    return f"{store}/{key}"


class EmbodimentNet(nn.Module):
    """The denoiser network of one embodiment: its action_in, the shared body, its head (EDM calls this)."""

    def __init__(self, action_in: nn.Module, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.action_in, self.body, self.head = action_in, body, head

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor,
                step: int | None = None) -> torch.Tensor:
        return self.head(self.body(self.action_in(x_in), c_noise, cond, step=step))

    @contextmanager
    def sampling(self, sigmas: list[float]) -> Iterator[None]:  # MoDE's expert cache lives in the body
        with self.body.sampling(sigmas):
            yield


class _CameraMetrics:
    """What TransformerPolicy.aux_loss reads from `obs_encoder`: the camera encoders' codebook usage."""

    def __init__(self, cameras: nn.ModuleDict) -> None:
        self.cameras = cameras

    def filter_metrics(self) -> dict[str, torch.Tensor]:
        return {k: v for enc in self.cameras.values() for k, v in enc.filter_metrics().items()}


def multi_embodiment_class(base: type[Policy]) -> type[Policy]:
    """The several-robot variant of a transformer policy class (MoDE, DiT): the base's blocks, experts,
    auxiliary losses and name, with the per-embodiment layers of this module."""
    from policies.mode import TransformerPolicy

    if not issubclass(base, TransformerPolicy):
        raise ValueError(f"a mixture of stores with different actions or observations needs a transformer "
                         f"policy (mode or dit), not {base.name!r}: its per-embodiment layers wrap the "
                         "transformer")
    if base not in _CLASSES:
        _CLASSES[base] = type(f"MultiEmbodiment{base.__name__}", (MultiEmbodimentMixin, base), {})
    return _CLASSES[base]


class MultiEmbodimentMixin:
    """Placed before a TransformerPolicy subclass (see multi_embodiment_class)."""

    def __init__(self, config: dict[str, Any], shape_meta: dict[str, Any], normalizer: Normalizer) -> None:
        cfg = self.config_cls.from_dict(config, policy=self.name)
        Policy.__init__(self, cfg.to_dict(), shape_meta, normalizer)
        self.cfg, self.edm = cfg, EDM(cfg)
        emb = shape_meta["embodiments"]
        self.stores = list(emb)
        self.action_dim = max(int(e["action_dim"]) for e in emb.values())  # a mixed batch's padded width
        obs_meta = shape_meta["obs"]
        self.slots = sorted(k for k, m in obs_meta.items() if m["type"] == "rgb")
        to, width = cfg.n_obs_steps, cfg.width
        self.goal_encoder = GoalEncoder.from_shape_meta(shape_meta, width, cfg.goal_dropout)
        encoder_args = dict(state_hidden=cfg.state_hidden, state_grouping=cfg.state_grouping,
                            image_encoder=cfg.image_encoder, film_dim=width if cfg.image_film else 0,
                            codebook=cfg.codebook, goal_dim=width)
        self.cameras = nn.ModuleDict({
            slot: ObsEncoder({"obs": {slot: obs_meta[slot]}}, normalizer, width, to, **encoder_args)
            for slot in self.slots})
        self.obs_encoder = _CameraMetrics(self.cameras)
        self.state_encoders = nn.ModuleDict()
        self.action_ins, self.heads = nn.ModuleDict(), nn.ModuleDict()
        for name, e in emb.items():
            state = {k: obs_meta[k] for k in e["obs_keys"] if obs_meta[k]["type"] == "low_dim"}
            if state:
                view = StoreNormalizer(normalizer, name)
                self.state_encoders[name] = ObsEncoder({"obs": state}, view, width, to, **encoder_args)
            self.action_ins[name] = nn.Linear(int(e["action_dim"]), width)
            self.heads[name] = nn.Linear(width, int(e["action_dim"]))
            nn.init.normal_(self.action_ins[name].weight, std=0.02)
            nn.init.zeros_(self.action_ins[name].bias)
            nn.init.zeros_(self.heads[name].weight)  # F starts at 0, as in the single-robot transformer
            nn.init.zeros_(self.heads[name].bias)
        self.n_state_tokens = max((enc.n_tokens for enc in self.state_encoders.values()), default=0)
        self.no_state = nn.Parameter(torch.randn(width) * 0.02)
        self.slot_absent = nn.Parameter(torch.randn(max(1, len(self.slots)), width) * 0.02)
        n_cond = 1 + self.n_state_tokens + to * len(self.slots)
        from policies.mode import DiffusionTransformer

        self.net = DiffusionTransformer(cfg, width, n_cond, self.make_mlp,
                                        expert_cache=getattr(cfg, "expert_cache", False), dtr=self.make_dtr())
        self.net.action_in, self.net.head = nn.Identity(), nn.Identity()  # per embodiment instead

    # --- which rows belong to which store ---------------------------------------------------
    def store_index(self, name: str) -> int:
        """The index of a store by name; one line naming the stores this policy knows otherwise."""
        if name not in self.stores:
            raise CheckpointError(f"this policy has no store {name!r} (no normaliser or layers for it); it "
                                  f"knows: {', '.join(self.stores)}")
        return self.stores.index(name)

    def store_of_task(self, task: torch.Tensor) -> torch.Tensor:
        """[B] global task index -> [B] store index (tasks are numbered store after store)."""
        firsts = torch.tensor([int(e["first_task"]) for e in self.shape_meta["embodiments"].values()],
                              device=task.device)
        return torch.searchsorted(firsts, task.long(), right=True) - 1

    def _cond(self, name: str, obs: dict[str, torch.Tensor], goal: dict[str, torch.Tensor]) -> torch.Tensor:
        """[b, n_cond, width] for rows of one store: goal, its state tokens (padded), every camera slot."""
        goal_emb = self.goal_encoder(goal)
        b, to = goal_emb.shape[0], self.cfg.n_obs_steps
        parts = [goal_emb[:, None]]
        have = 0
        if name in self.state_encoders:
            tokens = self.state_encoders[name](obs, StoreNormalizer(self.normalizer, name), goal_emb)
            parts.append(tokens)
            have = tokens.shape[1]
        if have < self.n_state_tokens:
            parts.append(self.no_state.expand(b, self.n_state_tokens - have, -1))
        own = self.shape_meta["embodiments"][name]["obs_keys"]
        for i, slot in enumerate(self.slots):
            if slot in own:
                parts.append(self.cameras[slot]({slot: obs[slot]}, self.normalizer, goal_emb))
            else:  # masked: never reads the slot's pixels
                parts.append(self.slot_absent[i].expand(b, to, -1))
        return torch.cat([p.to(goal_emb.dtype) for p in parts], dim=1)

    def _net(self, name: str) -> EmbodimentNet:
        return EmbodimentNet(self.action_ins[name], self.net, self.heads[name])

    @staticmethod
    def _rows(x: Any, rows: torch.Tensor) -> Any:
        if isinstance(x, dict):
            return {k: MultiEmbodimentMixin._rows(v, rows) for k, v in x.items()}
        return x[rows]

    # --- training ---------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        store = batch["store"]
        n = store.shape[0]
        goal = goal_from_batch(batch)
        total_diff, total_aux, metrics = 0.0, 0.0, {}
        for k, name in enumerate(self.stores):
            rows = torch.nonzero(store == k).flatten()
            if rows.numel() == 0:
                continue
            share = rows.numel() / n
            da = int(self.shape_meta["embodiments"][name]["action_dim"])
            obs = self._rows(batch["obs"], rows)
            cond = self._cond(name, obs, self._rows(goal, rows))
            view = StoreNormalizer(self.normalizer, name)
            x0 = view.normalize("action", batch["action"][rows][..., :da])
            pad = batch["action_is_pad"][rows] if "action_is_pad" in batch else None
            loss_k = self.edm.loss(self._net(name), x0, cond, pad)
            aux, group_metrics = self.aux_loss()  # the base's (MoDE: load balancing of this forward)
            total_diff = total_diff + share * loss_k
            if aux is not None:
                total_aux = total_aux + share * aux
            metrics.update(group_metrics)
            metrics[f"diffusion_loss/{name}"] = loss_k.detach()
        loss = total_diff + total_aux
        return loss, {**metrics, "diffusion_loss": torch.as_tensor(total_diff).detach()}

    # --- inference --------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_action(self, obs: dict[str, torch.Tensor], goal: dict[str, torch.Tensor],
                       generator: Generators = None) -> torch.Tensor:
        """Rows of one store: [B, Ta, Da] of that store. Rows of several: [B, Ta, max Da], each row's dims
        past its store's action dimension zero (validation compares them with the padded batch)."""
        store = self.store_of_task(goal["task"])
        present = store.unique().tolist()
        ta, start = self.cfg.n_action_steps, self.cfg.n_obs_steps - 1
        out = None
        for k in present:
            name = self.stores[k]
            rows = torch.nonzero(store == k).flatten()
            da = int(self.shape_meta["embodiments"][name]["action_dim"])
            gens = generator
            if generator is not None and not isinstance(generator, torch.Generator):
                gens = [generator[i] for i in rows.tolist()]
            cond = self._cond(name, self._rows(obs, rows), self._rows(goal, rows))
            ref = next(self.net.parameters())
            x0 = self.edm.sample(self._net(name), (rows.numel(), self.cfg.horizon, da), cond, device=ref.device,
                                 dtype=ref.dtype, generator=gens)
            action = StoreNormalizer(self.normalizer, name).unnormalize("action", x0)[:, start : start + ta]
            if len(present) == 1:
                return action
            if out is None:
                out = action.new_zeros(store.shape[0], ta, self.action_dim)
            out[rows, :, :da] = action
        return out

    def action_dims(self, batch: dict[str, Any]) -> torch.Tensor:
        """[B] each row's own action dimension (for metrics over a padded mixed batch)."""
        dims = torch.tensor([int(e["action_dim"]) for e in self.shape_meta["embodiments"].values()])
        return dims.to(batch["store"].device)[batch["store"]]

    def for_store(self, name: str) -> StorePolicy:
        return StorePolicy(self, name)


class StorePolicy(nn.Module):
    """One store's policy out of a several-robot one: its observation keys, its tasks (numbered from 0 as
    in its store), its action dimension. What evaluation of that robot's tasks runs."""

    def __init__(self, policy: Any, name: str) -> None:
        super().__init__()
        policy.store_index(name)
        self.policy, self.store = policy, name
        meta = policy.shape_meta["embodiments"][name]
        self.first_task = int(meta["first_task"])
        self.name, self.config = policy.name, policy.config
        self.shape_meta = {**policy.shape_meta, "obs": {k: policy.shape_meta["obs"][k] for k in meta["obs_keys"]},
                           "action": {"shape": [int(meta["action_dim"])]}, "n_tasks": int(meta["n_tasks"])}

    @torch.no_grad()
    def predict_action(self, obs: dict[str, torch.Tensor], goal: dict[str, torch.Tensor],
                       generator: Generators = None) -> torch.Tensor:
        goal = {**goal, "task": goal["task"].long() + self.first_task}
        return self.policy.predict_action(obs, goal, generator=generator)
