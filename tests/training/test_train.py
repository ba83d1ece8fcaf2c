import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException

from policies.base import CheckpointError, Policy
from tests.training.helpers import compose_cfg
from train import train

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("policy", ["mode", "dit", "cnn"])
def test_smoke_training_writes_loadable_checkpoints(make_store, tmp_path, policy):
    store = make_store(4)
    cfg = compose_cfg(store.path, policy)
    run_dir = train(cfg, tmp_path / "run")
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and len(ckpts) >= 2  # last + top-k by val/loss
    assert (run_dir / "config.yaml").is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 20
    assert ckpt["dataset"]["demo_seeds"] == [0, 1, 2, 3]
    restored = Policy.from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert restored.name == policy
    # The checkpoint's policy is the EMA copy: it must differ from the live weights after training.
    live = {k[len("policy."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("policy.")}
    ema = ckpt["policy"]["state_dict"]
    assert any(not torch.equal(live[k], ema[k]) for k in ema if ema[k].is_floating_point())


def test_resume_matches_uninterrupted_run(make_store, tmp_path):
    store = make_store(4)
    straight = train(compose_cfg(store.path, extra=["optim.total_steps=20"]), tmp_path / "straight")
    first = train(compose_cfg(store.path, extra=["optim.total_steps=20", "trainer.max_steps=10"]),
                  tmp_path / "resumed")
    resumed = train(compose_cfg(store.path, extra=["optim.total_steps=20", f"resume={first}"]),
                    tmp_path / "ignored")
    assert resumed == first
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 20
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_resume_refuses_another_policy(make_store, tmp_path):
    store = make_store(3)
    run = train(compose_cfg(store.path, extra=["trainer.max_steps=2"]), tmp_path / "run")
    with pytest.raises(ValueError, match="holds a 'mode' policy"):
        train(compose_cfg(store.path, "dit", extra=[f"resume={run}"]), tmp_path / "x")
    with pytest.raises(ValueError, match="differs"):
        train(compose_cfg(store.path, extra=[f"resume={run}", "policy.width=64"]), tmp_path / "x")
    with pytest.raises(CheckpointError, match="does not exist"):
        train(compose_cfg(store.path, extra=[f"resume={tmp_path / 'nowhere'}"]), tmp_path / "x")


def test_non_finite_loss_stops_with_clear_message_and_keeps_checkpoint(make_store, tmp_path):
    store = make_store(3)
    run = train(compose_cfg(store.path, extra=["trainer.max_steps=10"]), tmp_path / "run")
    before = (run / "checkpoints" / "last.ckpt").read_bytes()
    from training.module import NonFiniteLoss

    with pytest.raises(NonFiniteLoss, match="last good checkpoint"):  # a diverging run in the same dir
        train(compose_cfg(store.path, extra=["optim.lr=1e30", "optim.warmup_steps=1",
                                             "trainer.gradient_clip_val=null"]), run)
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == before


def test_bad_config_names_fail_listing_choices(make_store, tmp_path):
    store = make_store(2)
    with pytest.raises(ConfigCompositionException, match="dit"):
        compose_cfg(store.path, "transformerz")
    with pytest.raises(ConfigCompositionException, match="batchsize"):
        compose_cfg(store.path, extra=["data.batchsize=3"])
    with pytest.raises(ValueError, match="unknown"):
        train(compose_cfg(store.path, extra=["+policy.widht=3"]), tmp_path / "never")
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_ddp_two_cpu_processes(make_store, tmp_path):
    store = make_store(4)
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "train.py"), "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
           "trainer.max_steps=6", "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
           "trainer.enable_progress_bar=false", "trainer.precision=32-true", "logger=csv",
           f"task.dataset={store.path}", "task.obs_keys=[robot0_eef_pos,object]", "task.n_demos=1",
           "data.batch_size=4", "data.val_ratio=0.25", "policy.horizon=8", "policy.n_action_steps=4",
           "policy.width=32", "policy.n_layers=1", "policy.n_heads=2", "policy.expert_hidden=32",
           "policy.router_hidden=16", "policy.state_hidden=32", "policy.num_sampling_steps=2",
           f"hydra.run.dir={tmp_path / 'ddp'}"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ckpt = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6


def test_run_pictures_written(make_store, tmp_path):
    store = make_store(3)
    run = train(compose_cfg(store.path, extra=["trainer.max_steps=10", "trainer.log_every_n_steps=2"]),
                tmp_path / "run")
    import imageio.v2 as imageio

    for name in ("training_curve.png", "expert_usage.png"):
        img = imageio.imread(run / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 300, (name, img.shape)
        colours = len(np.unique(img[..., :3].reshape(-1, 3), axis=0))
        assert colours > 50, (name, colours)  # drawn content (a curve, a heatmap), not a blank canvas
    heat = imageio.imread(run / "expert_usage.png")[..., :3].astype(float)
    assert (heat[..., 0] - heat[..., 2]).std() > 5  # the colour map varies over the heatmap
    from policies.base import Policy
    from training.plots import expert_weights_vs_sigma

    sigmas, w = expert_weights_vs_sigma(Policy.from_checkpoint(run / "checkpoints" / "last.ckpt"), n_sigmas=7)
    assert w.shape == (1, 7, 4) and sigmas[0] < sigmas[-1]
    assert np.allclose(w.sum(-1), 1.0, atol=1e-5) and ((w > 0).sum(-1) == 2).all()  # top-2, renormalized


def hydra_policy(preset: str) -> dict:
    """cfg["policy"] exactly as `python train.py policy=<preset>` composes it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=[f"policy={preset}"]), resolve=True)["policy"]


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "conf" / "policy").glob("*.yaml")))
def test_every_policy_preset_is_a_valid_config(preset):
    """Each conf/policy/*.yaml composes (through Hydra) into a config its policy accepts, equal to the
    Hydra-free reading of the preset that benchmarks use."""
    from policies.base import POLICY_REGISTRY
    from training.hydra_configs import load_policy_preset

    cfg = hydra_policy(preset)
    assert cfg == load_policy_preset(preset)
    parsed = POLICY_REGISTRY[cfg["name"]].config_cls.from_dict(cfg, policy=cfg["name"])
    assert parsed.n_obs_steps >= 1


@pytest.mark.parametrize("name", ["mode", "dit", "cnn"])
def test_defaults_are_written_once(name):
    """`Policy.build(name, {})` (a notebook) and `python train.py policy=name` build the same model."""
    from data.normalize import Normalizer
    from training.checkpoint import policy_config

    shape_meta = {"obs": {"robot0_eef_pos": {"shape": [3], "type": "low_dim"},
                          "agentview_image": {"shape": [84, 84, 3], "type": "rgb"}},
                  "action": {"shape": [7]}, "n_tasks": 2, "lang_dim": 0}
    modes = {"robot0_eef_pos": "limits", "agentview_image": "image", "action": "limits"}
    arrays = {"robot0_eef_pos": np.zeros((2, 3), np.float32), "agentview_image": np.zeros((1, 1), np.uint8),
              "action": np.linspace(-1, 1, 14, dtype=np.float32).reshape(2, 7)}
    normalizer = Normalizer.fit(arrays, modes)
    from_notebook = Policy.build(name, {}, shape_meta, normalizer)
    hydra_cfg = {"policy": hydra_policy(name)}
    from_hydra = Policy.build(name, policy_config(hydra_cfg), shape_meta, normalizer)
    assert from_hydra.config_cls.from_dict(from_hydra.config).to_dict() == \
        from_notebook.config_cls.from_dict(from_notebook.config).to_dict()
    shapes = lambda p: {k: tuple(v.shape) for k, v in p.state_dict().items()}  # noqa: E731
    assert shapes(from_hydra) == shapes(from_notebook)


def test_ddp_ranks_take_disjoint_shards_that_cover_the_global_batch(make_store):
    """What each DDP rank's loader draws (rank and world size come from the trainer, as in
    test_ddp_two_cpu_processes): per step the ranks' windows are disjoint and together are exactly the
    windows a single process draws with batch_size * world_size."""
    from types import SimpleNamespace

    from training.datamodule import DemoDataModule

    store = make_store(8)

    def drawn(rank: int, world: int, batch_size: int, steps: int = 3) -> list[list[int]]:
        dm = DemoDataModule(store.path, ["robot0_eef_pos", "object"], 2, 8, 4, batch_size=batch_size,
                            val_ratio=0.0)
        dm.trainer = SimpleNamespace(global_step=0, global_rank=rank, world_size=world)
        loader = dm.train_dataloader()
        assert len(dm.train_set) > 2 * 6 * steps  # no epoch boundary inside the steps drawn
        batches = iter(loader.batch_sampler)
        return [next(batches) for _ in range(steps)]

    r0, r1, single = drawn(0, 2, 6), drawn(1, 2, 6), drawn(0, 1, 12)
    for a, b, both in zip(r0, r1, single):
        assert len(a) == len(b) == 6 and not set(a) & set(b)
        assert sorted(a + b) == sorted(both)


def test_sigterm_saves_last_checkpoint_and_exits_non_zero(make_store, tmp_path):
    """`make train` must not go on to evaluate a run that was stopped half-way."""
    import signal
    import time

    store = make_store(4)
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "train.py"), "trainer=smoke", "trainer.max_steps=100000",
           "trainer.print_every_n_steps=1", "logger=none", f"task.dataset={store.path}",
           "task.obs_keys=[robot0_eef_pos,object]", "task.n_demos=1", "data.batch_size=4", "data.val_ratio=0.25",
           "policy.horizon=8", "policy.n_action_steps=4", "policy.width=32", "policy.n_layers=1",
           "policy.n_heads=2", "policy.expert_hidden=32", "policy.router_hidden=16", "policy.state_hidden=32",
           f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 240
    for line in proc.stdout:  # wait until training is under way
        lines.append(line)
        if "step 5/" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    out = "".join(lines) + rest
    assert proc.returncode == 143, out[-3000:]
    assert "interrupted at step" in out
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] >= 5


def test_dit_resumes_although_its_mlp_hidden_is_automatic(make_store, tmp_path):
    """mlp_hidden=0 resolves to a size; the checkpoint stores the size and resume compares resolved configs."""
    store = make_store(3)
    first = train(compose_cfg(store.path, "dit", extra=["optim.total_steps=6", "trainer.max_steps=3"]),
                  tmp_path / "run")
    again = train(compose_cfg(store.path, "dit", extra=["optim.total_steps=6", "trainer.max_steps=6",
                                                        f"resume={first}"]), tmp_path / "ignored")
    assert torch.load(again / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_periodic_last_checkpoint_is_the_one_last_checkpoint(make_store, tmp_path):
    """Saves by PeriodicCheckpoint and by validation write the same last.ckpt (no stale last-v1.ckpt)."""
    store = make_store(3)
    run = train(compose_cfg(store.path, extra=["checkpoint.every_n_steps=2", "trainer.val_check_interval=4",
                                               "trainer.max_steps=9"]), tmp_path / "run")
    names = {p.name for p in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in names and not any(n.startswith("last-v") or n.startswith(".") for n in names), names
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 9


@pytest.mark.parametrize("policy", ["mode", "dit"])
def test_validation_logs_the_diffusion_loss_apart_from_auxiliary_terms(make_store, tmp_path, policy):
    import csv

    store = make_store(3)
    extra = ["trainer.max_steps=4", "trainer.val_check_interval=4", "logger=csv"]
    run = train(compose_cfg(store.path, policy, extra=extra), tmp_path / "run")
    rows = [r for r in csv.DictReader(open(run / "csv" / "metrics.csv")) if r.get("val/loss")]
    assert rows, "no validation row in metrics.csv"
    total, diffusion = float(rows[-1]["val/loss"]), float(rows[-1]["val/diffusion_loss"])
    if policy == "mode":  # load-balancing (>= lb_weight, since the balance term is >= 1) + z terms
        assert total - diffusion >= 0.9 * compose_cfg(store.path)["policy"]["lb_weight"]
    else:
        assert total == pytest.approx(diffusion)
