"""eval_rollouts.py on a fake env and a tiny registered policy: outputs, W&B, and each bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eval_rollouts import EvalError, evaluate, load_config
from policies.base import POLICY_REGISTRY
from tests import eval_fakes
from tests.envs import fake_env

REPO = Path(__file__).resolve().parents[1]

FACTORY = f"{fake_env.__name__}:make_env"
TASKS = [
    {"name": "a", "instruction": "do a", "env_spec": {"horizon": 6, "task_id": 0, "succeed_at": 3}},
    {"name": "b", "instruction": "do b", "env_spec": {"horizon": 6, "task_id": 1,
                                                      "raise_on_seeds": [1_000_003]}},
]


@pytest.fixture(autouse=True)
def registered_fake_policy():
    """Registered only while these tests run, so no other test sees it in POLICY_REGISTRY."""
    eval_fakes.register()
    yield
    POLICY_REGISTRY.pop(eval_fakes.POLICY_NAME, None)


def write_checkpoint(path: Path, tasks=TASKS, **extra) -> Path:
    return eval_fakes.write_checkpoint(path, tasks, **extra)


def cfg(tmp_path: Path, *overrides: str):
    base = [f"outputs_dir={tmp_path / 'outputs'}", "n_episodes=4", "workers=2", "video.n=2", "logger=none",
            "progress=false", f"env_factory={FACTORY}"]
    return load_config(base + list(overrides))


def test_eval_writes_info_videos_and_chart(tmp_path, capsys) -> None:
    ckpt = write_checkpoint(tmp_path / "outputs" / "2025-01-01" / "00-00-00" / "checkpoints" / "last.ckpt")
    info = evaluate(cfg(tmp_path, "checkpoint=latest"), command="python eval_rollouts.py checkpoint=latest")
    out = Path(info["out_dir"])
    assert out.parent == ckpt.parent.parent / "eval"  # <run dir>/eval/<timestamp>
    assert "checkpoint=latest -> " in capsys.readouterr().out
    saved = json.loads((out / "eval_info.json").read_text())
    assert saved["checkpoint"] == str(ckpt) and saved["policy"] == "fake_eval_test"
    assert saved["global_step"] == 7 and saved["config"]["n_episodes"] == 4
    assert saved["command"] == "python eval_rollouts.py checkpoint=latest"
    eps = saved["episodes"]
    assert [(e["seed"], e["task"]) for e in eps] == [(1_000_000, 0), (1_000_001, 1), (1_000_002, 0),
                                                     (1_000_003, 1)]
    assert set(eps[0]) >= {"seed", "task", "success", "steps", "return", "wall_s", "error"}
    assert [e["success"] for e in eps] == [True, False, True, False]
    assert eps[3]["error"].startswith("RuntimeError: boom") and saved["aggregate"]["n_errors"] == 1
    agg = saved["aggregate"]
    assert agg["success_rate"] == 0.5
    assert agg["success_ci95"] == pytest.approx([0.150036, 0.849964], abs=1e-5)
    assert agg["episodes_per_s"] > 0 and saved["per_task"]["a"]["success_rate"] == 1.0
    assert saved["per_task"]["b"]["n_errors"] == 1
    videos = sorted(p.name for p in (out / "videos").glob("*.mp4"))
    assert videos == ["ep0000_a_success.mp4", "ep0001_b_failure.mp4"]
    assert (out / "success_per_task.png").stat().st_size > 0


def test_run_dir_and_out_and_wandb_offline(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    write_checkpoint(run_dir / "checkpoints" / "last.ckpt", tasks=TASKS[:1], wandb_run_id="trainrun1")
    info = evaluate(cfg(tmp_path, f"checkpoint={run_dir}", f"out={tmp_path / 'res'}", "n_episodes=2",
                        "video.n=1", "logger=wandb"))
    assert info["out_dir"] == str(tmp_path / "res") and (tmp_path / "res" / "eval_info.json").is_file()
    assert not (tmp_path / "res" / "success_per_task.png").exists()  # one task: no chart
    runs = list((run_dir / "wandb").glob("offline-run-*-trainrun1"))  # logged into the training run
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert list(runs[0].glob("files/media/videos/eval/video_*.mp4"))


def test_bad_inputs_each_give_one_clear_error(tmp_path, monkeypatch) -> None:
    with pytest.raises(EvalError, match="does not exist"):
        evaluate(cfg(tmp_path, f"checkpoint={tmp_path / 'nope.ckpt'}"))
    with pytest.raises(EvalError, match="latest: no .*checkpoints/last.ckpt here"):
        evaluate(cfg(tmp_path, "checkpoint=latest"))
    with pytest.raises(EvalError, match="checkpoint=PATH"):
        evaluate(cfg(tmp_path))
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x80\x02not a checkpoint")
    with pytest.raises(EvalError, match="corrupt.ckpt' is not a checkpoint of this framework \\("):
        evaluate(cfg(tmp_path, f"checkpoint={corrupt}"))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(EvalError, match="not a checkpoint of this framework"):
        evaluate(cfg(tmp_path, f"checkpoint={foreign}"))
    no_tasks = write_checkpoint(tmp_path / "no_tasks.ckpt", tasks=[])
    with pytest.raises(EvalError, match="no task list"):
        evaluate(cfg(tmp_path, f"checkpoint={no_tasks}"))
    ok = write_checkpoint(tmp_path / "ok.ckpt")
    with pytest.raises(EvalError, match="n_episodes must be an integer > 0, got 0"):
        evaluate(cfg(tmp_path, f"checkpoint={ok}", "n_episodes=0"))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(EvalError, match="cannot write"):
        evaluate(cfg(tmp_path, f"checkpoint={ok}", f"out={blocker / 'sub'}"))
    with pytest.raises(EvalError, match="demonstration seeds"):
        evaluate(cfg(tmp_path, f"checkpoint={ok}", "seeds=[1,2,30,40]"))
    # The default factory builds real simulators: specs are checked before any rollout.
    bad_sim = write_checkpoint(tmp_path / "bad_sim.ckpt",
                               tasks=[{"name": "x", "env_spec": {"simulator": "gazebo", "task": "Lift"}}])
    with pytest.raises(EvalError, match="task 'x'.*not valid here.*unknown simulator"):
        evaluate(cfg(tmp_path, f"checkpoint={bad_sim}", "env_factory=null"))
    lift = write_checkpoint(tmp_path / "lift.ckpt",
                            tasks=[{"name": "lift", "env_spec": {"simulator": "robosuite", "task": "Lift"}}])
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "robosuite" else real_find_spec(name, *a))
    with pytest.raises(EvalError, match="robosuite, which is not installed"):
        evaluate(cfg(tmp_path, f"checkpoint={lift}", "env_factory=null"))
    monkeypatch.undo()
    broken = write_checkpoint(tmp_path / "broken.ckpt")
    ck = torch.load(broken, weights_only=True)
    ck["policy"]["name"] = "no_such_policy"
    torch.save(ck, broken)
    with pytest.raises(EvalError, match="cannot rebuild the policy.*unknown policy 'no_such_policy'"):
        evaluate(cfg(tmp_path, f"checkpoint={broken}"))
    fails_build = write_checkpoint(tmp_path / "fails.ckpt",
                                   tasks=[{"name": "f", "env_spec": {"horizon": 5, "fail_build": True}}])
    with pytest.raises(EvalError, match="task 'f' cannot be used.*not installed"):
        evaluate(cfg(tmp_path, f"checkpoint={fails_build}"))


def test_cli_reports_an_error_without_a_traceback(tmp_path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "eval_rollouts.py", f"checkpoint={tmp_path / 'missing.ckpt'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1
    assert "error: checkpoint" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_evaluation_closes_its_workers_quietly(tmp_path, how) -> None:
    slow = [{"name": "slow", "env_spec": {"horizon": 100_000, "step_s": 0.005}}]  # episodes never end here
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", tasks=slow)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    args = [f"checkpoint={ckpt}", "n_episodes=4", "workers=2", "video.n=0", "logger=none", "progress=false",
            f"env_factory={eval_fakes.__name__}:make_env", f"out={tmp_path / 'out'}"]
    env = {**os.environ, "WANDB_MODE": "disabled", eval_fakes.PID_DIR_VAR: str(pid_dir)}
    command = [sys.executable, "-c", "import tests.eval_fakes as f; f.main()", *args]
    # A terminal's process has SIGINT at its default, but one started in the background by a non-interactive
    # shell (`pytest ... &`, nohup) ignores it, and the evaluation would inherit that and rightly keep
    # running: give the child the default disposition, so Python's KeyboardInterrupt handler is installed.
    proc = subprocess.Popen(command, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=_sigint_default)
    try:
        deadline = time.monotonic() + 120
        while len(list(pid_dir.iterdir())) < 2:  # both workers have built their env
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        time.sleep(0.5)  # the episodes are running: requests and replies cross the pipes
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
        else:
            proc.send_signal(signal.SIGTERM)  # `kill PID` reaches the evaluation only
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == (130 if how == "ctrl-c" else 143), err
    assert "interrupted" in err
    assert "Traceback" not in err and "ConnectionResetError" not in err and "BrokenPipeError" not in err, err
    workers = [int(p.name) for p in pid_dir.iterdir()]
    assert len(workers) == 2 and not [pid for pid in workers if _running(pid)]
