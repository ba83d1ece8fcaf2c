import pytest
import torch

from policies.base import Policy
from policies.dit import DiTConfig, DiTPolicy, dit_config_matching, matched_mlp_hidden
from policies.mode import MoDEConfig
from tests.policies.policy_batches import batch_for
from tests.policies.test_mode import COMMON, DA, MOE, TA, make, sample


def test_default_dit_has_the_active_params_of_default_mode():
    mode, dit = make("mode"), make("dit")
    # tiny configs: the DiT's auto hidden matches a MoDE with default experts, so compare to that one
    reference = make("mode", expert_hidden=MoDEConfig.expert_hidden, router_hidden=MoDEConfig.router_hidden)
    active, total = reference.param_counts()["params_active"], dit.param_counts()["params_total"]
    assert abs(total - active) <= 1.5 * COMMON["width"] * COMMON["n_layers"]  # h rounds to an integer
    assert dit.param_counts()["params_active"] == total
    assert mode.param_counts()["params_active"] < mode.param_counts()["params_total"]


@pytest.mark.parametrize("same", ["active", "total"])
@pytest.mark.parametrize("experts", [(4, 2, False), (8, 1, True), (3, 3, False)])
def test_matching_config_equalizes_params(same, experts):
    num_experts, top_k, shared = experts
    mode_config = {**COMMON, **MOE, "num_experts": num_experts, "top_k": top_k, "shared_expert": shared}
    mode = make("mode", **{k: v for k, v in mode_config.items() if k not in COMMON})
    dit = make("dit", mlp_hidden=dit_config_matching(mode_config, same)["mlp_hidden"])
    target = mode.param_counts()[f"params_{same}"]
    assert abs(dit.param_counts()["params_total"] - target) <= 1.5 * COMMON["width"] * COMMON["n_layers"]


def test_matched_hidden_formula():
    cfg = MoDEConfig(width=128, num_experts=4, top_k=2, expert_hidden=256, router_hidden=64)
    router = 128 * 64 + 64 + 64 * 4 + 4
    assert matched_mlp_hidden(cfg) == round((2 * 3 * 128 * 256 + router) / (3 * 128))
    assert matched_mlp_hidden(cfg, "total") == round((4 * 3 * 128 * 256 + router) / (3 * 128))
    assert DiTConfig().mlp_hidden == matched_mlp_hidden(MoDEConfig())
    with pytest.raises(ValueError, match="same must be"):
        matched_mlp_hidden(cfg, "dense")


@pytest.mark.parametrize("image,lang_dim", [(False, 0), (True, 16)])
def test_shapes_and_training_signal(image, lang_dim):
    policy = make("dit", image=image, lang_dim=lang_dim)
    batch = batch_for(policy)
    loss, metrics = policy.compute_loss(batch)
    assert torch.isfinite(loss) and set(metrics) == {"diffusion_loss"}
    loss.backward()
    assert policy.net.blocks[-1].mlp.w13.grad is not None
    policy.eval()
    assert sample(policy, batch).shape == (3, TA, DA)
    assert policy.net.sparse_layers() == []


def test_checkpoint_round_trip_and_name_checks(tmp_path):
    policy = make("dit").eval()
    batch = batch_for(policy)
    before = sample(policy, batch)
    policy.save(tmp_path / "dit.pt")
    loaded = DiTPolicy.from_checkpoint(tmp_path / "dit.pt")
    assert loaded.cfg.mlp_hidden == policy.cfg.mlp_hidden
    torch.testing.assert_close(sample(loaded, batch), before)
    assert isinstance(Policy.from_checkpoint(tmp_path / "dit.pt"), DiTPolicy)
    with pytest.raises(ValueError, match="unknown dit config key.*num_experts"):
        make("dit", num_experts=4)
