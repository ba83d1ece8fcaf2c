"""The reliability battery (issue #35): every bad input of tests/reliability/cases.py is refused before any
work, in one line naming the key or path, with nothing written; a few real processes check the exit code
and that no traceback reaches the user.

Config cases run in this process through the entry points' own functions (train(), evaluate(), the mains
of data.generate and data.export); a python start costs seconds, so only a handful run as processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import eval_fakes
from tests.reliability import cases
from tests.reliability.runners import (
    EVAL_TASKS,
    damage_a_chunk,
    fill,
    make_tiny_store,
    one_line,
    places,
    train_cfg,
    verdict_of_main,
)

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def ground(tmp_path_factory):
    """One tiny store, an evaluation checkpoint and the named paths, shared by the module's cases."""
    root = tmp_path_factory.mktemp("battery")
    store = make_tiny_store(root / "s.zarr")
    eval_fakes.register()
    ckpt = eval_fakes.write_checkpoint(root / "run" / "checkpoints" / "last.ckpt", EVAL_TASKS)
    yield {"root": root, "store": store.path, "ckpt": ckpt, **places(root / "p")}
    from policies.base import POLICY_REGISTRY

    POLICY_REGISTRY.pop(eval_fakes.POLICY_NAME, None)


def _listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize(("case", "overrides", "names"), cases.TRAIN_CASES, ids=[c[0] for c in cases.TRAIN_CASES])
def test_train_values_are_refused_before_any_step(ground, tmp_path, monkeypatch, case, overrides, names):
    from training import store_check
    from training.config_check import ConfigError
    from training.run import train

    monkeypatch.setattr(store_check, "available_memory_bytes", lambda: 16 << 30)  # any machine: a 16 GB one

    if case == "accelerator-absent":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has the GPU the case asks for")
    run_dir = tmp_path / "run"
    store_before = _listing(Path(ground["store"]))
    cfg = train_cfg(ground["store"], [fill(o, ground) for o in overrides])
    with pytest.raises(ConfigError) as err:
        train(cfg, run_dir)
    assert one_line(str(err.value)) and names in str(err.value), str(err.value)
    assert not run_dir.exists()  # nothing half-written
    assert _listing(Path(ground["store"])) == store_before


@pytest.mark.parametrize(("case", "path", "names"), cases.RUN_DIR_CASES, ids=[c[0] for c in cases.RUN_DIR_CASES])
def test_run_directories_that_cannot_be_written_are_refused(ground, case, path, names):
    from training.config_check import ConfigError
    from training.run import train
    from training.run_dir import train_argv

    with pytest.raises(ConfigError) as err:
        train(train_cfg(ground["store"], []), Path(fill(path, ground)))
    assert one_line(str(err.value)) and "hydra.run.dir" in str(err.value) and names in str(err.value)
    with pytest.raises(ConfigError) as before_hydra:  # train.py: before Hydra tries to create it
        train_argv(["trainer=smoke", f"hydra.run.dir={fill(path, ground)}"])
    assert str(before_hydra.value) == str(err.value)


@pytest.mark.parametrize(("case", "overrides", "names"), cases.EVAL_CASES, ids=[c[0] for c in cases.EVAL_CASES])
def test_eval_values_are_refused_before_any_rollout(ground, tmp_path, case, overrides, names):
    from training.evaluate import EvalConfigError, evaluate, load_config

    out = tmp_path / "out"
    base = [f"checkpoint={ground['ckpt']}", "n_episodes=2", "workers=1", "logger=none", "progress=false",
            f"env_factory={eval_fakes.__name__}:make_env", f"out={out}"]
    with pytest.raises(EvalConfigError) as err:
        evaluate(load_config(base + [fill(o, ground) for o in overrides]))
    assert one_line(str(err.value)) and names in str(err.value), str(err.value)
    assert not out.exists()


@pytest.mark.parametrize(("case", "argv", "names"), cases.GENERATE_CASES, ids=[c[0] for c in cases.GENERATE_CASES])
def test_generate_arguments_are_refused_before_any_simulation(tmp_path, case, argv, names):
    from data.generate import main

    out = tmp_path / "g.zarr"
    verdict, message, code = verdict_of_main(main, ["task=lift", f"out={out}", "workers=0", *argv])
    assert (verdict, code) == ("clear", 2) and names in message, message
    assert not out.exists()


@pytest.mark.parametrize(("case", "argv", "names"), cases.EXPORT_CASES, ids=[c[0] for c in cases.EXPORT_CASES])
def test_exports_name_what_is_wrong(ground, tmp_path, case, argv, names):
    from data.export import main

    store = Path(ground["store"])
    if "damaged" in argv:
        store = make_tiny_store(tmp_path / "damaged.zarr").path
        damage_a_chunk(Path(store))
        argv = [a for a in argv if a != "damaged"]
    paths = {**ground, "tmp": str(tmp_path)}
    before = _listing(tmp_path)
    verdict, message, code = verdict_of_main(main, [str(store), *[fill(a, paths) for a in argv]])
    assert verdict == "clear" and code != 0 and names in message, message
    if "damaged.zarr" in str(store):
        assert "data/object rows 0-" in message and "(episode" in message
        assert not (tmp_path / "new" / "x.hdf5").exists() and not list((tmp_path / "new").glob("*.partial"))
    else:
        assert _listing(tmp_path) == before


@pytest.mark.parametrize(("case", "argv", "names"), cases.SUITE_CASES, ids=[c[0] for c in cases.SUITE_CASES])
def test_suite_results_directories_that_cannot_be_written_are_refused(ground, case, argv, names):
    from benchmarks.suite.__main__ import main

    verdict, message, code = verdict_of_main(main, ["robosuite-state", "dry_run=true",
                                                    *[fill(a, ground) for a in argv]])
    assert (verdict, code) == ("clear", 2) and names in message, message


def test_an_export_creates_the_missing_parent_directories(ground, tmp_path):
    from data.export import main

    out = tmp_path / "exports" / "lift.hdf5"
    assert verdict_of_main(main, [ground["store"], f"out={out}", "format=robomimic"])[0] == "accepted"
    assert out.is_file()


# --- a few real processes: exit code 2, one line, no traceback, nothing written ---------------------
def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=ENV)


def test_train_py_refuses_a_bad_policy_shape_without_writing_a_run_dir(ground, tmp_path):
    run_dir = tmp_path / "run"
    proc = _run([str(ROOT / "train.py"), "trainer=smoke", "logger=none", f"task.dataset={ground['store']}",
                 "task.obs_keys=[robot0_eef_pos,object]", "policy.n_heads=0", f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: policy.n_heads")
    assert "Traceback" not in proc.stderr
    assert not run_dir.exists(), _listing(run_dir)  # Hydra's log and .hydra/ of a refused run are removed


def test_eval_rollouts_py_refuses_a_worker_timeout_that_would_fail_every_episode(ground, tmp_path):
    proc = _run(["-c", "import tests.eval_fakes as f; f.main()", f"checkpoint={ground['ckpt']}", "logger=none",
                 "worker_timeout_s=0.3", f"out={tmp_path / 'out'}"], ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[-1]]
    assert "worker_timeout_s" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_data_export_refuses_an_existing_lerobot_directory_in_one_line(ground, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    proc = _run(["-m", "data.export", ground["store"], f"out={taken}", "format=lerobot"], ROOT)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"error: {taken} already exists; choose another output directory "
                                                "(nothing is overwritten)"]


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_damaged_chunk_is_named_by_store_key_and_episode_on_every_read_path(tmp_path, in_memory):
    from data.dataset import DemoDataset
    from data.store import StoreError

    store = make_tiny_store(tmp_path / "d.zarr")
    damage_a_chunk(Path(store.path))
    with pytest.raises(StoreError) as err:
        ds = DemoDataset(store, ["robot0_eef_pos", "object"], 2, 8, 4, in_memory=in_memory)
        ds.__getitems__(list(range(len(ds))))
    message = str(err.value)
    assert one_line(message) and store.path in message and "data/object rows 0-" in message and "(episode" in message
