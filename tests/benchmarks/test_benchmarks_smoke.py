"""Every benchmark script runs at a smoke size (tiny shapes, one repeat) and prints well-formed JSON lines.

Benchmarks are not tests (speed is never asserted), but a script nothing runs rots unnoticed: a renamed
config key crashed train_throughput.py for weeks. Each case runs the script as a user would, in a process
of its own with one thread, and checks its exit status and its lines. Smoke runs never write results.
The scripts that evaluate checkpoints get a tiny untrained MoDE checkpoint of the task they need.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.common import LIFT_ACTION_DIM, LIFT_STATE, RESULTS_DIR
from data.normalize import Normalizer
from envs.registry import resolve_tasks
from policies.base import Policy

ROOT = Path(__file__).resolve().parents[2]
TINY_MODE = {"width": 16, "n_layers": 1, "n_heads": 2, "expert_hidden": 32, "router_hidden": 8,
             "state_hidden": 16, "num_sampling_steps": 2}
OBJECT_STATE = {"lift": 10, "square": 14}  # the robosuite tasks' object-state sizes
SHORT_EVAL = ["--episodes", "1", "--workers", "1", "--eval", "max_steps=4", "--eval", "video.n=0"]

# name -> command after the interpreter; {lift}/{square}/{out} are filled in by the test.
SCRIPTS = {
    "train_throughput": ["benchmarks/train_throughput.py", "--smoke", "--policies", "mode,dit,cnn"],
    "train_profile": ["benchmarks/train_profile.py", "--smoke"],
    "inference": ["-m", "benchmarks.inference", "--smoke", "--device", "cpu"],
    "kernels": ["benchmarks/kernels.py", "--quick", "--device", "cpu", "--threads", "1"],
    "data_throughput": ["benchmarks/data_throughput.py", "--smoke"],
    "codebook_init": ["benchmarks/codebook_init.py", "--temperatures", "1", "--frames", "2", "--seeds", "1"],
    "env_throughput": ["benchmarks/env_throughput.py", "--smoke"],
    "rollout_throughput": ["benchmarks/rollout_throughput.py", "--smoke"],
    "metaworld_expert_success": ["benchmarks/metaworld_expert_success.py", "--tasks", "reach-v3", "--seeds", "1",
                                 "--horizon", "5", "--no-throughput"],
    "thread_settings": ["-m", "benchmarks.thread_settings", "--smoke"],
    "thread_settings-eval": ["-m", "benchmarks.thread_settings", "--smoke", "--eval-checkpoint", "{lift}"],
    "router_usage": ["benchmarks/router_usage.py", "tiny={lift}"],
    "action_steps_success": ["-m", "benchmarks.action_steps_success", "{lift}", "--action-steps", "2",
                             "--out", "{out}", *SHORT_EVAL],
    "precision_success": ["-m", "benchmarks.precision_success", "{lift}", "--precisions", "fp32",
                          "--episodes", "1", "--workers", "1", "--record", "2", "--out", "{out}",
                          "max_steps=4", "video.n=0"],
    "square_stages": ["-m", "benchmarks.square_stages", "{square}", "--out", "{out}", *SHORT_EVAL],
    "render_backends": ["benchmarks/render_backends.py", "--steps", "5", "--repeats", "1"],
    "serving": ["-m", "benchmarks.serving", "--quick"],
    "latency_study": ["-m", "benchmarks.latency_study", "{lift}", "--episodes", "1", "--workers", "1",
                      "--latencies", "100", "--transitions", "switch"],
    "libero_expert_success": ["benchmarks/libero_expert_success.py", "--tasks", "0", "--episodes", "1"],
    "libero_throughput": ["benchmarks/libero_throughput.py", "--quick"],
}


def tiny_checkpoint(path: Path, task: str) -> Path:
    """An untrained tiny MoDE on a robosuite task's state, saved as training saves it (with the task list)."""
    dims = {**LIFT_STATE, "object-state": OBJECT_STATE[task]}
    shape_meta = {"obs": {k: {"shape": [d], "type": "low_dim"} for k, d in dims.items()},
                  "action": {"shape": [LIFT_ACTION_DIM]}, "n_tasks": 1, "lang_dim": 0}
    rows = {k: torch.randn(64, d).numpy() for k, d in {**dims, "action": LIFT_ACTION_DIM}.items()}
    normalizer = Normalizer.fit(rows, {k: "limits" for k in rows})
    torch.manual_seed(0)
    policy = Policy.build("mode", TINY_MODE, shape_meta, normalizer)
    tasks = [{**t, "env_spec": t["env_spec"].to_dict()} for t in resolve_tasks(task)]
    torch.save({"policy": policy.checkpoint_dict(), "global_step": 0, "wandb_run_id": None,
                "dataset": {"path": f"{task}.zarr", "tasks": tasks, "demo_seeds": list(range(10))}}, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {task: tiny_checkpoint(root / f"{task}.ckpt", task) for task in OBJECT_STATE}


def test_every_script_is_covered():
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    helpers = {"__init__", "common", "inference_cases", "inference_table", "peer_mode"}  # imported, not run
    drawers = {"charts"}  # draws the committed results (test_charts_draw_from_the_committed_results)
    assert scripts - helpers - drawers == {name.split("-")[0] for name in SCRIPTS}


def test_charts_draw_from_the_committed_results(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.charts", "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pngs = sorted(tmp_path.glob("*.png"))
    assert [p.name for p in pngs] == ["inference-latency-cpu.png", "inference-speedups-cpu.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_benchmark_runs_at_smoke_size(name, checkpoints, tmp_path):
    args = [a.format(lift=checkpoints["lift"], square=checkpoints["square"], out=tmp_path / "out")
            for a in SCRIPTS[name]]
    results_before = {p: p.stat().st_mtime for p in RESULTS_DIR.glob("*.jsonl")}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"{name} printed no JSON lines:\n{proc.stdout[-2000:]}"
    for rec in lines:
        assert {"bench", "case", "metric", "value"} <= set(rec), rec
        assert isinstance(rec["value"], (int, float)) and rec["value"] == rec["value"], rec  # a number, not NaN
    assert {p: p.stat().st_mtime for p in RESULTS_DIR.glob("*.jsonl")} == results_before  # nothing saved


def test_gpu_check_dry_run_runs_every_step_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OUT": str(tmp_path),
           "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    assert {rec["bench"] for rec in lines} == {"train_throughput", "kernels"}
    assert any(rec["case"].startswith("mode_vs_dit") for rec in lines)
