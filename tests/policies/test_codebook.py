import math
from pathlib import Path

import numpy as np
import pytest
import torch

from data.normalize import Normalizer
from policies.base import Policy
from policies.diffusion import goal_from_batch
from policies.encoders.codebook import CodebookBottleneck, CodebookConfig, LinearBottleneck, make_bottleneck
from policies.mode import MoDEConfig

DA, TO, T, TA, CAM = 3, 2, 6, 4, "agentview_image"
TINY = {"n_obs_steps": TO, "horizon": T, "n_action_steps": TA, "width": 32, "n_layers": 2, "n_heads": 2,
        "state_hidden": 16, "num_sampling_steps": 3, "expert_hidden": 16, "router_hidden": 8,
        "image_encoder": {"base_channels": 8, "out_dim": 16, "stage_blocks": [1, 1], "random_shift": 2}}
VARIANTS = [{"kind": "codebook", "indexing": "softmax"}, {"kind": "codebook", "indexing": "topk_softmax"},
            {"kind": "codebook", "indexing": "gumbel"}, {"kind": "linear"}]


def make_policy(image: bool = True, seed: int = 0, **overrides) -> Policy:
    rng = np.random.default_rng(0)
    arrays = {"action": rng.uniform(-1, 2, size=(50, DA)).astype(np.float32),
              "pos": rng.normal(size=(50, 4)).astype(np.float32)}
    obs_meta = {"pos": {"shape": [4], "type": "low_dim"}}
    if image:
        obs_meta[CAM] = {"shape": [16, 16, 3], "type": "rgb"}
    shape_meta = {"obs": obs_meta, "action": {"shape": [DA]}, "n_tasks": 2, "lang_dim": 0}
    torch.manual_seed(seed)
    normalizer = Normalizer.fit(arrays, {"action": "limits", "pos": "limits"})
    policy = Policy.build("mode", {**TINY, **overrides}, shape_meta, normalizer)
    torch.nn.init.normal_(policy.net.head.weight, std=0.5)  # the head starts at 0: no gradient would pass
    return policy


def batch_for(b: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    obs = {"pos": torch.randn(b, TO, 4, generator=g),
           CAM: torch.randint(0, 256, (b, TO, 16, 16, 3), generator=g, dtype=torch.uint8)}
    return {"obs": obs, "action": torch.rand(b, T, DA, generator=g), "task": torch.arange(b) % 2,
            "action_is_pad": torch.zeros(b, T, dtype=torch.bool)}


def bottleneck(**cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    return make_bottleneck(CodebookConfig(**{"size": 12, "code_dim": 4, "topk": 3, **cfg}), 16, 8, 32)


def inputs(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 16, generator=g).requires_grad_(), torch.randn(n, 8, generator=g).requires_grad_()


# --- every variant: shapes and gradients ------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.get("indexing", v["kind"]))
def test_bottleneck_shapes_and_gradients(variant):
    module = bottleneck(**variant).train()
    feat, goal = inputs()
    out = module(feat, goal)
    assert out.shape == (5, 32)
    out.pow(2).sum().backward()
    for name, p in [*module.named_parameters(), ("feat", feat), ("goal", goal)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.get("indexing", v["kind"]))
def test_policy_with_bottleneck_trains_and_samples(variant):
    policy = make_policy(codebook=variant).train()
    assert not policy.obs_encoder.image_proj and CAM in policy.obs_encoder.image_filters
    loss, metrics = policy.compute_loss(batch_for())
    loss.backward()
    encoder_grads = [p.grad for p in policy.obs_encoder.image_encoders.parameters()]
    assert all(g is not None for g in encoder_grads) and sum(g.abs().sum() for g in encoder_grads) > 0
    usage = {k for k in metrics if k.startswith("codebook/")}
    if variant["kind"] == "codebook":  # logged by the Lightning module as train/<name> (scalar tensors)
        assert usage == {f"codebook/{CAM}/{m}" for m in ("entropy", "perplexity", "dead_codes")}
        assert all(torch.is_tensor(metrics[k]) and metrics[k].numel() == 1 for k in usage)
    else:
        assert not usage
    action = policy.eval().predict_action(batch_for()["obs"], goal_from_batch(batch_for()))
    assert action.shape == (3, TA, DA) and torch.isfinite(action).all()


def test_default_mode_has_no_bottleneck_and_codebook_off_is_unchanged():
    default, explicit_off = make_policy(), make_policy(codebook={"kind": "none"})
    assert MoDEConfig().codebook["kind"] == "none" and MoDEConfig().router == "learned"
    assert not default.obs_encoder.image_filters and CAM in default.obs_encoder.image_proj
    state, other = default.state_dict(), explicit_off.state_dict()
    assert state.keys() == other.keys() and all(torch.equal(state[k], other[k]) for k in state)
    _, metrics = default.compute_loss(batch_for())
    assert not any(k.startswith("codebook/") for k in metrics)


def test_the_goal_changes_the_codebook_lookup():
    policy = make_policy(codebook={"kind": "codebook"}, image_film=False).eval()
    batch = batch_for(b=2)
    obs = {k: v[:1].expand(2, *v.shape[1:]) for k, v in batch["obs"].items()}  # same frames, tasks 0 and 1
    policy.obs_encoder(obs, policy.normalizer, policy.goal_encoder({"task": torch.tensor([0, 1])}))
    probs = policy.obs_encoder.image_filters[CAM].stats["probs"]
    assert not torch.allclose(probs[0], probs[1])


# --- code weights ---------------------------------------------------------------------------
@pytest.mark.parametrize("indexing", ["softmax", "topk_softmax", "gumbel"])
def test_eval_code_weights_sum_to_one(indexing):
    module = bottleneck(kind="codebook", indexing=indexing, dropout=0.3).eval()
    probs = module.code_weights(*inputs(50))
    assert probs.shape == (50, 12) and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(50))
    nonzero = (probs > 0).sum(-1)
    if indexing == "topk_softmax":
        assert (nonzero == 3).all()
    if indexing == "gumbel":
        scores = module.indexer(torch.cat(inputs(50), dim=-1))
        assert (nonzero == 1).all() and torch.equal(probs.argmax(-1), scores.argmax(-1))


def test_dropout_acts_only_while_training():
    module = bottleneck(kind="codebook", indexing="softmax", dropout=0.5)
    feat, goal = inputs(64)
    clean = torch.softmax(module.indexer(torch.cat([feat, goal], -1)), -1)
    module.eval()
    torch.testing.assert_close(module.code_weights(feat, goal), clean)
    torch.testing.assert_close(module.code_weights(feat, goal), module.code_weights(feat, goal))
    module.train()
    dropped = module.code_weights(feat, goal)
    zeros = dropped == 0
    assert 0.3 < zeros.float().mean() < 0.7  # about half the weights dropped
    torch.testing.assert_close(dropped[~zeros], clean[~zeros] / 0.5)  # the others rescaled by 1 / (1 - p)
    module.cfg.dropout = 0.0
    torch.testing.assert_close(module.code_weights(feat, goal), clean)


def test_usage_metrics_uniform_and_collapsed():
    module = bottleneck(kind="codebook", dropout=0.0).eval()
    linear = module.indexer[1]
    assert module.usage_metrics() == {}
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
    module(*inputs())
    m = module.usage_metrics()
    assert math.isclose(m["entropy"].item(), math.log(12), rel_tol=1e-5)
    assert math.isclose(m["perplexity"].item(), 12, rel_tol=1e-5) and m["dead_codes"].item() == 0
    with torch.no_grad():
        linear.bias[4] = 50.0  # every lookup collapses onto code 4
    module(*inputs())
    m = module.usage_metrics()
    assert m["entropy"].item() < 1e-6 and math.isclose(m["perplexity"].item(), 1, rel_tol=1e-5)
    assert m["dead_codes"].item() == 11


def test_linear_control_has_the_same_width():
    codebook, linear = bottleneck(kind="codebook"), bottleneck(kind="linear")
    assert isinstance(codebook, CodebookBottleneck) and isinstance(linear, LinearBottleneck)
    assert linear.down[1].out_features == codebook.codes.shape[1] == 4
    assert linear.up.in_features == codebook.up.in_features == 4
    assert bottleneck(kind="none") is None


# --- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad,match", [
    ({"size": 1}, "size"), ({"code_dim": 0}, "code_dim"), ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"), ({"kind": "vq"}, "kind"), ({"indexing": "sparsemax"}, "indexing"),
    ({"indexing": "topk_softmax", "topk": 300}, "topk"), ({"temperature": 0}, "temperature"),
    ({"codes": 8}, "unknown codebook config key"),
])
def test_bad_codebook_config_fails_at_construction(bad, match):
    with pytest.raises(ValueError, match=match):
        make_policy(codebook={"kind": "codebook", **bad})


def test_codebook_without_camera_fails_at_construction():
    with pytest.raises(ValueError, match="no camera"):
        make_policy(image=False, codebook={"kind": "codebook"})
    with pytest.raises(ValueError, match="no camera"):
        make_policy(image=False, codebook={"kind": "linear"})
    make_policy(image=False)  # off: fine without cameras


def test_hydra_overrides_reach_the_policy_config():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["policy.codebook.kind=codebook", "policy.codebook.indexing=gumbel",
                                           "policy.router=dtr", "policy.dtr_sharing_ratio=0.5"])
        default = compose("config")
    mode = MoDEConfig.from_dict(OmegaConf.to_container(cfg.policy, resolve=True), policy="mode")
    assert mode.codebook["kind"] == "codebook" and mode.codebook["indexing"] == "gumbel"
    assert mode.router == "dtr" and mode.dtr_sharing_ratio == 0.5
    assert default.policy.codebook.kind == "none" and default.policy.router == "learned"
    assert CodebookConfig.from_dict(dict(default.policy.codebook)) == CodebookConfig()
