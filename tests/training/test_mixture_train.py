"""Training on a mixture of stores: the checkpoint knows every store's tasks and starts a fine-tuning run; bad
mixtures stop in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data.mixture import MixtureError
from data.store import DemoStore
from policies.base import CheckpointError, Policy
from tests.training.helpers import compose_cfg
from train import train
from training.eval_store import policy_for_store, restrict_to_store
from training.init_from import REPORT_NAME
from training.mixture_data import build_mixture_data


def mixture(*entries) -> str:
    return "data.mixture=[" + ",".join(f"{{name:{n},dataset:'{p}',weight:{w}}}" for n, p, w in entries) + "]"


def scaled_store(path, scale: float, n_tasks: int, keys=("robot0_eef_pos", "object"), object_dim: int = 10):
    rng = np.random.default_rng(int(scale))
    tasks = [{"name": f"{path.stem}{i}", "instruction": f"task {i} of {path.stem}", "env_spec": {}}
             for i in range(n_tasks)]
    store = DemoStore.create(path, tasks=tasks)
    dims = {"robot0_eef_pos": 3, "object": object_dim}
    for i in range(4):
        ep = {k: rng.normal(size=(10, dims[k])).astype(np.float32) for k in keys}
        ep["action"] = (scale * rng.normal(size=(10, 7))).astype(np.float32)
        store.append_episode(ep, task=i % n_tasks, seed=100 * int(scale) + i)
    return store


def test_a_mixture_trains_and_its_checkpoint_names_every_store(tmp_path):
    a = scaled_store(tmp_path / "a.zarr", 1.0, n_tasks=2)
    b = scaled_store(tmp_path / "b.zarr", 10.0, n_tasks=1)
    cfg = compose_cfg("unused", "mode", [mixture(("a", a.path, 3), ("b", b.path, 1)), "trainer.max_steps=2"])
    run = train(cfg, tmp_path / "run")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    info = ckpt["dataset"]
    assert [m["name"] for m in info["mixture"]] == ["a", "b"]
    assert [(m["first_task"], m["n_tasks"], m["weight"]) for m in info["mixture"]] == [(0, 2, 3.0), (2, 1, 1.0)]
    assert [t["name"] for t in info["tasks"]] == ["a0", "a1", "b0"]
    assert ckpt["policy"]["shape_meta"]["n_tasks"] == 3
    assert sorted(info["demo_seeds"]) == [100, 101, 102, 103, 1000, 1001, 1002, 1003]
    # one normaliser over the training rows of both stores: its action range covers store b's 10x actions
    dm, _ = build_mixture_data(cfg)
    rows = [s.load(["action"])["action"] for s in dm.stores]
    span = 2.0 / ckpt["policy"]["state_dict"]["normalizer.maps.action.scale"]
    assert torch.all(span > 5.0) and float(span.max()) <= float(np.ptp(np.concatenate(rows), axis=0).max()) + 1e-4

    # evaluation of one store: its tasks only, numbered from 0 as in the store
    only_b = restrict_to_store(ckpt, "b", run)
    assert [t["name"] for t in only_b["dataset"]["tasks"]] == ["b0"]
    assert restrict_to_store(ckpt, None, run) is ckpt  # one robot: every task by default
    policy = Policy.from_checkpoint_dict(ckpt["policy"])
    obs = {"robot0_eef_pos": torch.randn(1, 2, 3), "object": torch.randn(1, 2, 10)}
    seed = torch.Generator().manual_seed
    torch.testing.assert_close(
        policy_for_store(policy, only_b).predict_action(obs, {"task": torch.tensor([0])}, generator=seed(0)),
        policy.predict_action(obs, {"task": torch.tensor([2])}, generator=seed(0)))
    with pytest.raises(CheckpointError, match="has no normaliser for it; it knows: a, b"):
        restrict_to_store(ckpt, "c", run)

    # pretrain on the mixture, fine-tune on one store: only the task table (3 tasks -> 1) differs in shape
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) differ in shape .*goal_encoder.task_table.weight"):
        train(compose_cfg(b.path, "mode", [f"init_from={run}", "trainer.max_steps=1"]), tmp_path / "ft0")
    ft = train(compose_cfg(b.path, "mode", [f"init_from={run}", "reinit=[goal_encoder.task_table]",
                                            "trainer.max_steps=1"]), tmp_path / "ft")
    report = json.loads((ft / REPORT_NAME).read_text())
    assert report["reinitialised"] == ["goal_encoder.task_table.weight"] and report["mismatched"] == {}


def test_bad_mixtures_stop_in_one_line(tmp_path):
    a = scaled_store(tmp_path / "a.zarr", 1.0, n_tasks=1)
    no_object = scaled_store(tmp_path / "c.zarr", 2.0, n_tasks=1, keys=("robot0_eef_pos",))
    other_object = scaled_store(tmp_path / "d.zarr", 3.0, n_tasks=1, object_dim=5)
    cases = [
        (mixture(("a", a.path, 1), ("c", no_object.path, 1)),
         r"\(c\): store .* lacks the declared key\(s\) \['object'\]"),
        (mixture(("a", a.path, 1), ("d", other_object.path, 1)),
         r"\(d\): 'object' is float32\[5\] but float32\[10\] in a; a key .* has one shape"),
        (mixture(("a", a.path, 1), ("a", a.path, 1)), "two stores are named 'a'"),
        (mixture(("a", a.path, 0)), "weight must be a number > 0"),
        (mixture(("a", a.path, 1), ("e", tmp_path / "nowhere.zarr", 1)), r"\(e\): "),
    ]
    for override, message in cases:
        with pytest.raises(MixtureError, match=message):
            train(compose_cfg("unused", "mode", [override]), tmp_path / "x")
    assert not (tmp_path / "x").exists()
