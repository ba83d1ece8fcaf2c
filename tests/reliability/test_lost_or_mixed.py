"""The three ways a run or a result was lost or mixed (issue #35), each reproduced, and the neighbours of
each fix: a checkpoint that cannot be written, two runs in one directory (and resume), an evaluation
written over an earlier one; and two top-ups of one store."""

from __future__ import annotations

import builtins
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import eval_fakes
from tests.reliability.runners import make_tiny_store, train_cfg
from training.errors import USER_ERRORS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path):
    return make_tiny_store(tmp_path / "s.zarr").path


def _smoke(store: str, *extra: str) -> dict:
    """A 20-step run (validation, and so ModelCheckpoint's saves, at step 10 and 20)."""
    return train_cfg(store, ["trainer.max_steps=20", "trainer.val_check_interval=10", *extra])


def _unwritable(monkeypatch, ckpt_dir: Path, allow: int = 0) -> list[str]:
    """Every write into `ckpt_dir` after the first `allow` ones fails like an unwritable directory: opening a
    file for writing there, or renaming / replacing one into it (root ignores chmod, so this is how a test
    running as root gets a directory it cannot write)."""
    refused: list[str] = []
    real_open, real_rename, real_replace = builtins.open, os.rename, os.replace
    landed = [0]

    def inside(path) -> bool:
        return isinstance(path, str | os.PathLike) and Path(os.fspath(path)).resolve().parent == ckpt_dir.resolve()

    def refuse(path) -> None:
        refused.append(os.fspath(path))
        raise PermissionError(13, "Permission denied", os.fspath(path))

    def fake_open(file, mode="r", *a, **k):
        if inside(file) and any(c in mode for c in "wax+") and landed[0] >= allow:
            refuse(file)
        return real_open(file, mode, *a, **k)

    def move(real):
        def fake(src, dst, *a, **k):
            if inside(dst):
                if landed[0] >= allow:
                    refuse(dst)
                landed[0] += 1
            return real(src, dst, *a, **k)
        return fake

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "rename", move(real_rename))
    monkeypatch.setattr(os, "replace", move(real_replace))
    return refused


def _steps_taken(monkeypatch) -> list[int]:
    from training.module import PolicyModule

    seen: list[int] = []
    real = PolicyModule.training_step

    def counting(self, batch, batch_idx):
        seen.append(self.global_step)
        return real(self, batch, batch_idx)

    monkeypatch.setattr(PolicyModule, "training_step", counting)
    return seen


# --- 1. a checkpoint that cannot be written stops the run at once, in one line ------------------------
def test_an_unwritable_checkpoint_directory_stops_the_run_at_the_first_save(store, tmp_path, monkeypatch):
    from training.run import train

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    refused = _unwritable(monkeypatch, run_dir / "checkpoints")
    steps = _steps_taken(monkeypatch)
    with pytest.raises(USER_ERRORS) as err:
        train(_smoke(store), run_dir)
    monkeypatch.undo()
    message = str(err.value)
    assert "\n" not in message and str(run_dir / "checkpoints") in message and "Permission denied" in message
    assert refused and max(steps) == 9  # stopped at the step-10 save, not after training on
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))


def test_a_failed_save_keeps_the_last_good_checkpoint(store, tmp_path, monkeypatch):
    from training.run import train

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    _unwritable(monkeypatch, run_dir / "checkpoints", allow=1)  # the step-5 last.ckpt lands; then the disk fails
    with pytest.raises(USER_ERRORS, match="cannot write checkpoint"):
        train(_smoke(store, "checkpoint.every_n_steps=5"), run_dir)
    monkeypatch.undo()
    kept = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert kept["global_step"] == 5
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]


def test_a_save_that_would_fill_the_disk_is_refused_before_writing(store, tmp_path, monkeypatch):
    from training.run import train

    run_dir = tmp_path / "run"
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 20))
    with pytest.raises(USER_ERRORS, match=r"cannot write checkpoint .*MB are free"):
        train(_smoke(store), run_dir)
    assert not (run_dir / "checkpoints").exists() or not list((run_dir / "checkpoints").iterdir())


# --- 2. one live run per directory; resume continues the run it names ---------------------------------
def test_a_second_live_run_into_one_directory_is_refused(store, tmp_path):
    from training.run import train

    run_dir = tmp_path / "same"
    run_dir.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # the first run, alive
    try:
        (run_dir / ".lock").write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(),
                                                   "started": "now", "command": "python train.py"}))
        with pytest.raises(USER_ERRORS) as err:
            train(_smoke(store, "seed=1"), run_dir)
        assert "\n" not in str(err.value) and f"pid {other.pid}" in str(err.value)
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing of the second run
    finally:
        other.kill()
        other.wait()
    # Its process gone, the lock is stale: the next run takes the directory over, and gives it back.
    train(_smoke(store, "trainer.max_steps=2"), run_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / ".lock").exists()


def test_resume_continues_in_place_and_never_rewrites_the_recorded_config(store, tmp_path):
    from training.config_check import ConfigError
    from training.run import train

    run_dir = tmp_path / "run"
    train(_smoke(store, "trainer.max_steps=4", "checkpoint.every_n_steps=2"), run_dir)
    recorded = (run_dir / "config.yaml").read_bytes()
    for override, key in [("data.batch_size=4", "data.batch_size"), ("optim.lr=0.5", "optim.lr"),
                          ("policy.num_experts=2", "policy"), ("seed=3", "seed")]:
        with pytest.raises(USER_ERRORS) as err:
            train(_smoke(store, "trainer.max_steps=6", f"resume={run_dir}", override), tmp_path / "elsewhere")
        assert key in str(err.value) and "\n" not in str(err.value)
    other = make_tiny_store(tmp_path / "other.zarr").path
    with pytest.raises(ConfigError, match="task.dataset cannot change on resume"):
        train(_smoke(other, "trainer.max_steps=6", f"resume={run_dir}"), tmp_path / "elsewhere")
    from training.run_dir import train_argv

    with pytest.raises(ConfigError, match="hydra.run.dir=.*resume= continues the run in its own directory"):
        train_argv([f"resume={run_dir}", f"hydra.run.dir={tmp_path / 'other_dir'}"])
    assert train_argv([f"resume={run_dir}"])[1] == f"hydra.run.dir={run_dir.resolve()}"
    assert (run_dir / "config.yaml").read_bytes() == recorded and not (tmp_path / "elsewhere").exists()

    train(_smoke(store, "trainer.max_steps=6", f"resume={run_dir}"), tmp_path / "elsewhere")  # may change
    assert (run_dir / "config.yaml").read_bytes() == recorded
    segments = [json.loads(line) for line in (run_dir / "resumes.jsonl").read_text().splitlines()]
    assert [(s["step"], s["changed"]["trainer.max_steps"]) for s in segments] == [(4, [4, 6])]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


# --- 3. an evaluation never mixes its results with an earlier one ----------------------------------
@pytest.fixture
def fake_policy():
    eval_fakes.register()
    yield
    from policies.base import POLICY_REGISTRY

    POLICY_REGISTRY.pop(eval_fakes.POLICY_NAME, None)


def test_an_evaluation_into_earlier_results_is_refused_unless_replaced_whole(tmp_path, fake_policy):
    from training.config_check import ConfigError
    from training.evaluate import evaluate, load_config

    tasks = [{"name": "a", "instruction": "do a", "env_spec": {"horizon": 4, "succeed_at": 2}}]
    ckpt = eval_fakes.write_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", tasks)
    out = tmp_path / "res"

    def run(*extra: str) -> dict:
        return evaluate(load_config([f"checkpoint={ckpt}", "n_episodes=2", "workers=1", "logger=none",
                                     "progress=false", f"env_factory={eval_fakes.__name__}:make_env",
                                     f"out={out}", *extra]))

    run("video.n=2")
    first = json.loads((out / "eval_info.json").read_text())
    with pytest.raises(ConfigError, match="already holds an evaluation's results.*overwrite=true"):
        run("video.n=0")
    assert json.loads((out / "eval_info.json").read_text()) == first  # untouched
    run("video.n=0", "overwrite=true", "sample_seed=5")
    assert not (out / "videos").exists()  # replaced whole: no earlier video beside the new results
    assert json.loads((out / "eval_info.json").read_text())["config"]["sample_seed"] == 5
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds files an evaluation does not write"):
        run("overwrite=true")
    assert (out / "notes.txt").read_text() == "mine"


def test_errored_episodes_are_no_score_unless_allowed(tmp_path, fake_policy):
    from training.evaluate import load_config, run_cli

    tasks = [{"name": "b", "instruction": "do b", "env_spec": {"horizon": 6, "raise_on_seeds": [1_000_001]}}]
    ckpt = eval_fakes.write_checkpoint(tmp_path / "c.ckpt", tasks)
    base = [f"checkpoint={ckpt}", "n_episodes=2", "workers=1", "logger=none", "progress=false", "video.n=0",
            f"env_factory={eval_fakes.__name__}:make_env"]
    assert run_cli(load_config(base + [f"out={tmp_path / 'a'}"]), command="test") == 3
    info = json.loads((tmp_path / "a" / "eval_info.json").read_text())
    assert info["aggregate"]["n_errors"] == 1  # counted apart from the failures
    assert run_cli(load_config(base + [f"out={tmp_path / 'b'}", "allow_errors=true"]), command="test") == 0


# --- 4. two top-ups of one store -------------------------------------------------------------------
def test_a_second_top_up_of_a_store_being_written_is_refused(tmp_path):
    from data.dir_lock import LockError
    from data.generate import generate, store_lock_path

    out = tmp_path / "lift.zarr"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        Path(store_lock_path(out)).write_text(json.dumps({"pid": other.pid, "host": socket.gethostname()}))
        with pytest.raises(LockError, match=f"in use by another process \\(pid {other.pid}"):
            generate("lift", 1, str(out), workers=0, progress=False)
        assert not out.exists()
    finally:
        other.kill()
        other.wait()


# --- 5. a NaN validation loss stops the run like a NaN training loss -----------------------------------
def test_nan_in_the_validation_episode_only_stops_the_run(tmp_path, monkeypatch):
    from data.sampler import split_episodes
    from training.module import NonFiniteLoss
    from training.run import train

    store = make_tiny_store(tmp_path / "s.zarr", n_episodes=4)
    _, val = split_episodes(4, 0.25, 0)
    start = int(store.episode_ends[val[0] - 1]) if val[0] else 0
    arr = store.array("object")  # written behind the API, as a damaged conversion would leave it
    arr[start] = float("nan")
    steps = _steps_taken(monkeypatch)
    with pytest.raises(NonFiniteLoss, match=r"validation loss became nan at step 10: the validation batch holds "
                                            r"non-finite values in \['obs/object'\]"):
        train(_smoke(store.path), tmp_path / "run")
    assert max(steps) == 9
