import numpy as np
import pytest
import torch
from torch import nn

from data.normalize import Normalizer
from policies.base import Policy
from policies.cnn_unet import CNNConfig, CNNPolicy, TemporalUnet
from policies.diffusion import goal_from_batch
from tests.policies.policy_batches import batch_for

DA, TO, T, TA = 4, 2, 10, 6
TINY = {"n_obs_steps": TO, "horizon": T, "n_action_steps": TA, "down_dims": [16, 32, 64], "n_groups": 4,
        "noise_emb_dim": 16, "obs_width": 16, "goal_width": 16, "state_hidden": 32,
        "num_sampling_steps": 4, "image_encoder": {"base_channels": 8, "out_dim": 16, "pool": "avg"}}


def make(image: bool = False, lang_dim: int = 0, n_tasks: int = 3, **overrides):
    rng = np.random.default_rng(0)
    arrays = {"action": rng.uniform(-2, 3, size=(200, DA)).astype(np.float32),
              "pos": rng.normal(size=(200, 5)).astype(np.float32)}
    modes = {"action": "limits", "pos": "limits"}
    obs_meta = {"pos": {"shape": [5], "type": "low_dim"}}
    if image:
        arrays["agentview_image"] = np.zeros((1, 24, 24, 3), np.uint8)
        modes["agentview_image"] = "image"
        obs_meta["agentview_image"] = {"shape": [24, 24, 3], "type": "rgb"}
    shape_meta = {"obs": obs_meta, "action": {"shape": [DA]}, "n_tasks": n_tasks, "lang_dim": lang_dim}
    normalizer = Normalizer.fit(arrays, modes)
    return Policy.build("cnn", {**TINY, **overrides}, shape_meta, normalizer)



@pytest.mark.parametrize("image,lang_dim", [(False, 0), (True, 0), (False, 384), (True, 384)])
def test_shapes_state_image_task_lang(image, lang_dim):
    policy = make(image=image, lang_dim=lang_dim)
    batch = batch_for(policy)
    loss, metrics = policy.compute_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and "diffusion_loss" in metrics
    loss.backward()
    assert policy.net.down[0][0].block1[0].weight.grad is not None
    policy.eval()
    goal = {"task": batch["task"], **batch.get("goal", {})}
    action = policy.predict_action(batch["obs"], goal)
    assert action.shape == (3, TA, DA)
    assert torch.isfinite(action).all()


def test_unet_handles_horizons_that_are_not_a_power_of_two_multiple():
    cfg = CNNConfig(**{k: v for k, v in TINY.items() if k != "image_encoder"})
    net = TemporalUnet(cfg, action_dim=3, cond_dim=5)
    nn.init.normal_(net.head[-1].weight)  # the zero-initialized head would hide the shape of F
    for horizon in (1, 7, 8, 13):
        out = net(torch.randn(2, horizon, 3), torch.zeros(2), torch.randn(2, 5))
        assert out.shape == (2, horizon, 3)


def test_conditioning_reaches_the_output():
    """Goal, observation and noise level each change F (FiLM wiring), and no BatchNorm anywhere."""
    policy = make(image=True)
    nn.init.normal_(policy.net.head[-1].weight, std=0.1)
    policy.eval()
    b = batch_for(policy, b=2)
    x = torch.randn(2, T, DA)

    def f(obs=None, task=(0, 0), c_noise=(0.0, 0.0)):
        cond = policy.encode(b["obs"] if obs is None else obs, {"task": torch.tensor(task)})
        return policy.net(x, torch.tensor(c_noise), cond)

    base = f()
    assert not torch.allclose(base, f(task=(1, 1)), atol=1e-5)
    assert not torch.allclose(base, f(obs={**b["obs"], "pos": b["obs"]["pos"] + 1}), atol=1e-5)
    image2 = 255 - b["obs"]["agentview_image"]
    assert not torch.allclose(base, f(obs={**b["obs"], "agentview_image": image2}), atol=1e-5)
    assert not torch.allclose(base, f(c_noise=(1.0, 1.0)), atol=1e-5)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in policy.modules())


def test_padded_actions_do_not_contribute():
    """compute_loss hands action_is_pad to the loss: F at padded steps, however wrong, costs nothing."""
    policy = make()
    batch = batch_for(policy)
    batch["action_is_pad"][:, -3:] = True

    def loss_with(offset: float) -> torch.Tensor:
        def shift_padded(module, args, out):
            out = out.clone()
            out[:, -3:] += offset
            return out

        handle = policy.net.register_forward_hook(shift_padded)
        torch.manual_seed(0)
        loss = policy.compute_loss(batch)[0]
        handle.remove()
        return loss

    torch.testing.assert_close(loss_with(0.0), loss_with(100.0))
    batch["action_is_pad"][:] = False
    assert loss_with(100.0) > loss_with(0.0) + 100


def test_loss_decreases_on_one_batch():
    torch.manual_seed(0)
    policy = make(lang_dim=384)
    batch = batch_for(policy, b=8)
    x0 = policy.normalizer.normalize("action", batch["action"])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)

    def fixed_loss(sigma: float) -> float:  # one σ and one noise draw: comparable before and after
        with torch.no_grad():
            cond = policy.encode(batch["obs"], goal_from_batch(batch))
            return policy.edm.loss(policy.net, x0, cond, sigma=torch.full((8,), sigma), noise=noise).item()

    before = [fixed_loss(s) for s in (0.5, 2.0)]
    for _ in range(150):
        loss, _ = policy.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = [fixed_loss(s) for s in (0.5, 2.0)]
    # (at tiny σ the F-target is mostly the noise itself, which a few steps cannot learn)
    assert after[0] < before[0] / 2 and after[1] < before[1] / 3, (before, after)


def test_checkpoint_round_trip(tmp_path):
    policy = make(image=True, lang_dim=8)
    policy.set_lang_table(torch.randn(3, 8))
    with torch.no_grad():
        nn.init.normal_(policy.net.head[-1].weight, std=0.1)
    policy.eval()
    path = tmp_path / "cnn.pt"
    policy.save(path)
    loaded = Policy.from_checkpoint(path)
    assert isinstance(loaded, CNNPolicy) and not loaded.training
    assert loaded.config == policy.config and loaded.config["down_dims"] == [16, 32, 64]
    torch.testing.assert_close(loaded.goal_encoder.lang_table, policy.goal_encoder.lang_table)
    batch = batch_for(policy)
    goal = {"task": batch["task"]}  # language from the stored table: a rollout needs only the task
    a = policy.predict_action(batch["obs"], goal, generator=torch.Generator().manual_seed(5))
    b = loaded.predict_action(batch["obs"], goal, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert CNNPolicy.from_checkpoint(path).name == "cnn"


def test_bad_input_raises_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="divide by n_groups"):
        make(down_dims=[16, 30])
    with pytest.raises(ValueError, match="kernel_size"):
        make(kernel_size=4)
    with pytest.raises(ValueError, match="unknown cnn config key"):
        make(width=128)
    policy = make()
    batch = batch_for(policy)
    del batch["obs"]["pos"]
    with pytest.raises(KeyError, match="pos"):
        policy.compute_loss(batch)
    # a checkpoint of another policy is refused by name
    from policies.dit import DiTPolicy

    policy.save(tmp_path / "cnn.pt")
    with pytest.raises(ValueError, match="'cnn' policy, not a 'dit'"):
        DiTPolicy.from_checkpoint(tmp_path / "cnn.pt")


def test_preset_builds_the_image_encoder_it_names():
    from policies.encoders.resnet import ResNetImageEncoder
    from training.hydra_configs import load_policy_preset

    conf = load_policy_preset("cnn")
    cfg = CNNConfig.from_dict(conf, policy="cnn")
    encoder = ResNetImageEncoder(**cfg.image_encoder, film_dim=cfg.goal_width)
    assert encoder.out_dim == cfg.image_encoder["out_dim"]
