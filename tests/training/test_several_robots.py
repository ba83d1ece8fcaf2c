"""A mixture of two robots: per-embodiment layers, a masked camera slot, one normaliser per store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.dataset import default_normalizer_modes
from data.mixture import MixtureError
from data.store import DemoStore
from policies.base import CheckpointError, Policy
from tests.training.helpers import compose_cfg
from train import train
from training.mixture_data import build_mixture_data

KEYS = "task.obs_keys=[robot0_eef_pos,object,agentview_image]"
IMAGE = ["policy.image_encoder.base_channels=8", "policy.image_encoder.out_dim=16",
         "policy.image_encoder.stage_blocks=[1,1]", "policy.image_encoder.random_shift=0"]


def robot_store(path, action_dim: int, keys: tuple[str, ...], n_tasks: int, scale: float) -> DemoStore:
    rng = np.random.default_rng(action_dim)
    store = DemoStore.create(path, tasks=[{"name": f"{path.stem}{i}", "instruction": f"{path.stem} {i}",
                                           "env_spec": {}} for i in range(n_tasks)])
    dims = {"robot0_eef_pos": 3, "object": 10}
    for i in range(4):
        ep = {k: rng.normal(size=(9, dims[k])).astype(np.float32) for k in keys if k in dims}
        if "agentview_image" in keys:
            ep["agentview_image"] = rng.integers(0, 256, size=(9, 16, 16, 3), dtype=np.uint8)
        ep["action"] = (scale * rng.normal(size=(9, action_dim))).astype(np.float32)
        store.append_episode(ep, task=i % n_tasks, seed=i)
    return store


@pytest.fixture
def two_robots(tmp_path):
    """Robot a: 7-D actions, state + a camera, 2 tasks. Robot b: 4-D actions, state only (no camera)."""
    a = robot_store(tmp_path / "a.zarr", 7, ("robot0_eef_pos", "object", "agentview_image"), 2, 1.0)
    b = robot_store(tmp_path / "b.zarr", 4, ("robot0_eef_pos",), 1, 10.0)
    mixture = (f"data.mixture=[{{name:a,dataset:'{a.path}',weight:1}},"
               f"{{name:b,dataset:'{b.path}',weight:1,obs_keys:[robot0_eef_pos]}}]")
    return a, b, [mixture, KEYS, *IMAGE]


def built(cfg):
    dm, _ = build_mixture_data(cfg)
    meta = dm.shape_meta()
    normalizer = dm.fit_normalizer(default_normalizer_modes(meta))
    from training.checkpoint import policy_config

    return dm, Policy.build(cfg["policy"]["name"], policy_config(cfg), meta, normalizer)


def loss_of(policy, batch):
    torch.manual_seed(0)
    return policy.compute_loss(batch)[0]


@pytest.mark.parametrize("name", ["mode", "dit"])
def test_masked_camera_slot_and_absent_embodiment_get_nothing(two_robots, name):
    _, _, extra = two_robots
    dm, policy = built(compose_cfg("unused", name, extra))
    with torch.no_grad():  # the heads start at zero (F = 0 whatever the input): give them weights to pass on
        for p in policy.heads.parameters():
            p.normal_(std=0.5)
    dm.setup()
    batch = dm.train_set.__getitems__(list(range(len(dm.train_set))))
    store = batch["store"]
    assert set(store.tolist()) == {0, 1}
    assert torch.equal(batch["obs_is_pad"]["agentview_image"], store == 1)  # flagged, not silently zero
    assert torch.equal(batch["obs_is_pad"]["object"], store == 1)
    # changing the pixels of the masked slot (robot b's rows) leaves the loss unchanged
    before = loss_of(policy, batch)
    noisy = {**batch, "obs": {**batch["obs"], "agentview_image": batch["obs"]["agentview_image"].clone()}}
    noisy["obs"]["agentview_image"][store == 1] = torch.randint(0, 256, noisy["obs"]["agentview_image"][store == 1]
                                                                .shape, dtype=torch.uint8)
    assert torch.equal(loss_of(policy, noisy), before)
    # ... while the pixels robot a provides do count
    changed = {**batch, "obs": {**batch["obs"], "agentview_image": 255 - batch["obs"]["agentview_image"]}}
    assert not torch.equal(loss_of(policy, changed), before)

    # a batch of robot a alone: robot b's layers get no gradient; a batch with b's rows gives them one
    def grads(rows):
        policy.zero_grad(set_to_none=True)
        sub = policy._rows({k: v for k, v in batch.items() if k != "goal"}, rows)
        loss_of(policy, {**sub, "goal": {}}).backward()
        own = [*policy.action_ins["b"].parameters(), *policy.heads["b"].parameters(),
               *policy.state_encoders["b"].parameters()]
        return [p.grad for p in own]

    assert all(g is None or not g.any() for g in grads(torch.nonzero(store == 0).flatten()))
    assert any(g is not None and g.any() for g in grads(torch.arange(len(store))))


def test_each_store_keeps_its_normaliser_and_inference_needs_the_store(two_robots, tmp_path):
    a, b, extra = two_robots
    cfg = compose_cfg("unused", "mode", [*extra, "trainer.max_steps=2"])
    run = train(cfg, tmp_path / "run")
    policy = Policy.from_checkpoint(run / "checkpoints" / "last.ckpt")
    maps = policy.normalizer.maps
    assert list(maps["a/action"].offset.shape) == [7] and list(maps["b/action"].offset.shape) == [4]
    assert "b/object" not in maps and "a/object" in maps
    dm, _ = build_mixture_data(cfg)
    starts, ends = np.r_[0, b.episode_ends[:-1]], b.episode_ends
    train_rows = np.concatenate([np.arange(starts[i], ends[i]) for i in dm.splits[1][0]])
    b_rows = b.load(["action"])["action"][train_rows]
    want = torch.from_numpy((b_rows.max(0) + b_rows.min(0)) / 2).float()
    torch.testing.assert_close(maps["b/action"].offset, want)
    # one robot's rows: its own action dimension; save then load gives the same actions
    obs = {"robot0_eef_pos": torch.randn(2, 2, 3)}
    b_policy = policy.for_store("b")
    assert list(b_policy.shape_meta["obs"]) == ["robot0_eef_pos"]
    act = b_policy.predict_action(obs, {"task": torch.zeros(2, dtype=torch.long)},
                                  generator=torch.Generator().manual_seed(0))
    assert act.shape == (2, 4, 4)
    policy.save(tmp_path / "saved.pt")
    again = Policy.from_checkpoint(tmp_path / "saved.pt").for_store("b")
    torch.testing.assert_close(again.predict_action(obs, {"task": torch.zeros(2, dtype=torch.long)},
                                                    generator=torch.Generator().manual_seed(0)), act, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="no store 'c'.*knows: a, b"):
        policy.for_store("c")
    # evaluation: the store is needed, an unknown one is named with the known ones
    from training.eval_store import policy_for_store, restrict_to_store
    from training.evaluate import EvalError, evaluate, load_config

    for store, message in [(None, r"several robots \(a, b\); evaluate one at a time: store=NAME"),
                           ("c", "store='c': .* has no normaliser for it; it knows: a, b")]:
        with pytest.raises(EvalError, match=message):
            evaluate(load_config([f"checkpoint={run}", "logger=none", f"store={store or 'null'}"]))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    only_b = restrict_to_store(ckpt, "b", run)
    assert [t["name"] for t in only_b["dataset"]["tasks"]] == ["b0"]
    evaluated = policy_for_store(Policy.from_checkpoint_dict(ckpt["policy"]), only_b)
    torch.testing.assert_close(evaluated.predict_action(obs, {"task": torch.zeros(2, dtype=torch.long)},
                                                        generator=torch.Generator().manual_seed(0)), act)


def test_bad_several_robot_mixtures_stop_in_one_line(two_robots, tmp_path):
    a, b, extra = two_robots
    cases = [
        ([f"data.mixture=[{{name:a,dataset:'{a.path}',weight:1,obs_keys:[robot0_eef_pos,agentview_image]}},"
          f"{{name:b,dataset:'{b.path}',weight:1,obs_keys:[robot0_eef_pos]}}]",
          "task.obs_keys=[robot0_eef_pos,agentview_image,frontview_image]"],
         "'frontview_image' is provided by no store"),
        ([f"data.mixture=[{{name:a,dataset:'{a.path}',weight:1}},"
          f"{{name:b,dataset:'{b.path}',weight:1,obs_keys:[robot0_eef_pos,wrist]}}]", KEYS],
         r"\(b\): obs_keys \['wrist'\] are not in task.obs_keys"),
        ([f"data.mixture=[{{name:a,dataset:'{a.path}',weight:1}},{{name:b,dataset:'{b.path}',weight:1}}]", KEYS],
         r"\(b\): store .* lacks the declared key\(s\) \['object', 'agentview_image'\]"),
    ]
    for overrides, message in cases:
        with pytest.raises(MixtureError, match=message):
            train(compose_cfg("unused", "mode", overrides), tmp_path / "x")
    with pytest.raises(MixtureError, match="several robots; set rollout_eval.every_n_steps=0"):
        train(compose_cfg("unused", "mode", [*extra, "rollout_eval.every_n_steps=5"]), tmp_path / "x")
    with pytest.raises(MixtureError, match="use policy=mode or policy=dit, not cnn"):
        train(compose_cfg("unused", "cnn", extra), tmp_path / "x")
    assert not (tmp_path / "x").exists()
