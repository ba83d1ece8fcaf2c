"""Fine-tuning from a checkpoint: init_from's load report, reinit, freeze, the new store's normaliser."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data.dataset import default_normalizer_modes
from data.store import DemoStore
from policies.base import CheckpointError, Policy
from tests.training.helpers import compose_cfg
from train import train
from training import wiring
from training.config_check import ConfigError
from training.init_from import REPORT_NAME, load_report, matching

# The tensors whose shape follows the action dimension, per policy (what a new robot re-initialises).
ACTION_LAYERS = {
    "mode": ["net.action_in.weight", "net.head.weight", "net.head.bias"],
    "dit": ["net.action_in.weight", "net.head.weight", "net.head.bias"],
    "cnn": ["net.down.0.0.block1.0.weight", "net.down.0.0.skip.weight", "net.head.1.weight", "net.head.1.bias"],
}
REINIT = {"mode": "[net.action_in,net.head]", "dit": "[net.action_in,net.head]",
          "cnn": "[net.down.0.0.block1.0,net.down.0.0.skip,net.head.1]"}


def make_action_store(path, action_dim: int, action_scale: float, n_episodes: int = 4) -> DemoStore:
    rng = np.random.default_rng(action_dim)
    store = DemoStore.create(path, tasks=[{"name": "t", "instruction": "do it", "env_spec": {}}])
    for i in range(n_episodes):
        n = 12
        store.append_episode({"action": (action_scale * rng.normal(size=(n, action_dim))).astype(np.float32),
                              "robot0_eef_pos": rng.normal(size=(n, 3)).astype(np.float32),
                              "object": rng.normal(size=(n, 10)).astype(np.float32)}, task=0, seed=i)
    return store


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One short pretraining run per policy on a 7-D action store, shared by the tests below."""
    root = tmp_path_factory.mktemp("pre")
    store = make_action_store(root / "pre.zarr", 7, 1.0)
    runs = {}

    def get(policy: str):
        if policy not in runs:
            runs[policy] = train(compose_cfg(store.path, policy, ["trainer.max_steps=2"]), root / policy)
        return runs[policy]

    return get


def last(run):
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.mark.parametrize("policy", ["mode", "dit", "cnn"])
def test_new_action_dim_reports_exactly_the_action_layers_and_needs_reinit(pretrained, tmp_path, policy):
    pre = pretrained(policy)
    new = make_action_store(tmp_path / "new.zarr", 4, 10.0)
    with pytest.raises(CheckpointError, match=f"differ in shape.*{REPORT_NAME}.*reinit="):
        train(compose_cfg(new.path, policy, [f"init_from={pre}", "trainer.max_steps=1"]), tmp_path / "refused")
    report = json.loads((tmp_path / "refused" / REPORT_NAME).read_text())
    assert sorted(report["mismatched"]) == sorted(ACTION_LAYERS[policy])
    assert not (tmp_path / "refused" / "checkpoints").exists()  # stopped before training

    run = train(compose_cfg(new.path, policy, [f"init_from={pre}", f"reinit={REINIT[policy]}",
                                               "trainer.max_steps=2"]), tmp_path / "ft")
    report = json.loads((run / REPORT_NAME).read_text())
    assert report["mismatched"] == {}
    assert sorted(report["mismatched_reinitialised"]) == sorted(ACTION_LAYERS[policy])
    assert set(ACTION_LAYERS[policy]) <= set(report["reinitialised"])
    assert report["new"] == [] and report["unused"] == []
    assert "normalizer.maps.action.offset" in report["from_this_runs_data"]
    # every tensor that matched and was not re-initialised was copied: the body of the network
    pre_sd = last(pre)["policy"]["state_dict"]
    assert len(report["copied"]) + len(report["reinitialised"]) + len(report["from_this_runs_data"]) == \
        len(last(run)["policy"]["state_dict"])
    assert all(pre_sd[n].shape == last(run)["policy"]["state_dict"][n].shape for n in report["copied"])


def test_copied_weights_start_from_the_checkpoint_with_a_fresh_step_and_the_new_normaliser(pretrained, tmp_path):
    pre = pretrained("mode")
    new = make_action_store(tmp_path / "new.zarr", 7, 10.0)  # same robot, other data: nothing to reinit
    cfg = compose_cfg(new.path, "mode", [f"init_from={pre}", "trainer.max_steps=3", "freeze=[obs_encoder]"])
    run = train(cfg, tmp_path / "ft")
    ft, pre_ckpt = last(run), last(pre)
    assert ft["global_step"] == 3  # a new run: step, schedule and optimiser start afresh
    assert ft["optimizer_states"][0]["param_groups"][0]["initial_lr"] == cfg["optim"]["lr"]
    assert all(g["fused"] for g in ft["optimizer_states"][0]["param_groups"])  # training/module.adamw on the CPU
    # obs_encoder frozen, so its copied weights are still the pretrained ones, bit for bit
    enc = [k for k in ft["policy"]["state_dict"] if k.startswith("obs_encoder.")]
    assert enc and all(torch.equal(ft["policy"]["state_dict"][k], pre_ckpt["policy"]["state_dict"][k]) for k in enc)
    # the normaliser is the new store's (actions 10x larger), not the pretrained one
    dm = wiring.build_datamodule(cfg)
    want = dm.fit_normalizer(default_normalizer_modes(dm.shape_meta()))
    sd = ft["policy"]["state_dict"]
    for key in ("action", "object"):
        assert torch.equal(sd[f"normalizer.maps.{key}.scale"], want.maps[key].scale)
        assert torch.equal(sd[f"normalizer.maps.{key}.offset"], want.maps[key].offset)
    assert not torch.equal(sd["normalizer.maps.action.scale"],
                           pre_ckpt["policy"]["state_dict"]["normalizer.maps.action.scale"])
    # save then load: the same actions
    policy = Policy.from_checkpoint(run / "checkpoints" / "last.ckpt")
    policy.save(tmp_path / "saved.pt")
    again = Policy.from_checkpoint(tmp_path / "saved.pt")
    obs = {"robot0_eef_pos": torch.randn(3, 2, 3), "object": torch.randn(3, 2, 10)}
    goal = {"task": torch.zeros(3, dtype=torch.long)}
    a = policy.predict_action(obs, goal, generator=torch.Generator().manual_seed(0))
    b = again.predict_action(obs, goal, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (3, 4, 7)


def test_frozen_parameters_stay_bit_identical_and_out_of_the_optimiser(pretrained, tmp_path):
    pre = pretrained("mode")
    new = make_action_store(tmp_path / "new.zarr", 4, 1.0)
    run = train(compose_cfg(new.path, "mode", [
        f"init_from={pre}", "reinit=[net.action_in,net.head]", "freeze=[*router*,goal_encoder]",
        "optim.new_param_lr_mult=5.0", "trainer.max_steps=4"]), tmp_path / "ft")
    ft, pre_sd = last(run), last(pre)["policy"]["state_dict"]
    live = {k[len("policy."):]: v for k, v in ft["state_dict"].items() if k.startswith("policy.")}
    frozen = matching(live, ["*router*", "goal_encoder"])
    assert len(frozen) == 5  # router (2 layers x weight, bias) + task table
    for k in frozen:  # live and EMA weights alike
        assert torch.equal(live[k], pre_sd[k]) and torch.equal(ft["policy"]["state_dict"][k], pre_sd[k]), k
    assert not torch.equal(live["net.blocks.0.attn.qkv.weight"], pre_sd["net.blocks.0.attn.qkv.weight"])
    policy = Policy.from_checkpoint(run / "checkpoints" / "last.ckpt")
    n_trainable = sum(1 for n, _ in policy.named_parameters() if n not in frozen)
    groups = ft["optimizer_states"][0]["param_groups"]
    assert sum(len(g["params"]) for g in groups) == n_trainable  # the frozen ones are not in the optimiser
    lr = groups[0]["initial_lr"]
    new_groups = [g for g in groups if g["params"] and g["initial_lr"] != lr]
    # net.action_in.{weight,bias} and net.head.{weight,bias} train at 5x the learning rate
    assert sum(len(g["params"]) for g in new_groups) == 4
    assert all(g["initial_lr"] == pytest.approx(5 * lr) for g in new_groups)


def test_bad_init_from_stops_in_one_line(pretrained, tmp_path):
    pre = pretrained("mode")
    new = make_action_store(tmp_path / "new.zarr", 7, 1.0)
    with pytest.raises(CheckpointError, match="holds a 'mode' policy but this run builds policy=dit"):
        train(compose_cfg(new.path, "dit", [f"init_from={pre}"]), tmp_path / "x")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a checkpoint of this framework"):
        train(compose_cfg(new.path, "mode", [f"init_from={junk}"]), tmp_path / "x")
    with pytest.raises(ConfigError, match="pattern 'net.haed' matches no parameter"):
        train(compose_cfg(new.path, "mode", [f"init_from={pre}", "reinit=[net.haed]"]), tmp_path / "x")
    with pytest.raises(ConfigError, match="new_param_lr_mult must be a number > 0"):
        train(compose_cfg(new.path, "mode", [f"init_from={pre}", "optim.new_param_lr_mult=0"]), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_load_report_sorts_every_name():
    model = {"a.w": torch.zeros(2, 3), "b.w": torch.zeros(4), "c.w": torch.zeros(1), "normalizer.maps.x.scale":
             torch.zeros(3), "d.w": torch.zeros(5)}
    ckpt = {"a.w": torch.ones(2, 3), "b.w": torch.ones(3), "d.w": torch.ones(6), "old.w": torch.ones(1),
            "normalizer.maps.x.scale": torch.ones(2)}
    r = load_report(model, ckpt, ["d"])
    assert r["copied"] == ["a.w"] and r["new"] == ["c.w"] and list(r["mismatched"]) == ["b.w"]
    assert r["reinitialised"] == ["d.w"] and list(r["mismatched_reinitialised"]) == ["d.w"]
    assert r["unused"] == ["old.w"] and r["from_this_runs_data"] == ["normalizer.maps.x.scale"]


def test_resuming_a_fine_tuning_run_matches_the_uninterrupted_one(pretrained, tmp_path):
    pre = pretrained("mode")
    new = make_action_store(tmp_path / "new.zarr", 4, 1.0)
    ft = [f"init_from={pre}", "reinit=[net.action_in,net.head]", "freeze=[*router*]", "optim.new_param_lr_mult=3",
          "optim.total_steps=6"]
    straight = train(compose_cfg(new.path, "mode", [*ft, "trainer.max_steps=6"]), tmp_path / "straight")
    first = train(compose_cfg(new.path, "mode", [*ft, "trainer.max_steps=3"]), tmp_path / "first")
    resumed = train(compose_cfg(new.path, "mode", [*ft, "trainer.max_steps=6", f"resume={first}"]), tmp_path / "x")
    a, b = last(straight), last(resumed)
    assert resumed == first and b["global_step"] == 6
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=1e-5, atol=1e-6, msg=k)
