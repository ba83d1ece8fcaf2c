"""One owner for threads (envs/threads.py): every entry point applies it once, before torch loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from envs import threads

ROOT = Path(__file__).resolve().parents[2]

# Each entry point is started as a user starts it, with arguments that end it right after its setup
# (a --help or a usage error); the probe then reports what the process decided.
ENTRY_POINTS = {
    "train.py": ["path", "train.py", "--help"],
    "eval_rollouts.py": ["path", "eval_rollouts.py", "--help"],
    "data.generate": ["module", "data.generate", "no_such_argument"],
    "data.convert": ["module", "data.convert"],
    "benchmarks.suite": ["module", "benchmarks.suite"],
    "serve.py": ["path", "serve.py", "--help"],
}
PROBE = """
import json, os, runpy, sys
kind, target, *argv = sys.argv[1:]
sys.argv = [target, *argv]
try:
    (runpy.run_path if kind == "path" else runpy.run_module)(target, run_name="__main__")
except SystemExit:
    pass
from envs.threads import SETTINGS
print("SETTINGS " + json.dumps({**SETTINGS, "env_wait_policy": os.environ.get("OMP_WAIT_POLICY")}))
"""


def probe(entry: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *entry], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    line = next((s for s in proc.stdout.splitlines() if s.startswith("SETTINGS ")), None)
    assert line, f"no settings reported:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}"
    return json.loads(line.removeprefix("SETTINGS "))


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_sets_threads_once_before_torch(name):
    entry = ENTRY_POINTS[name]
    if entry[0] == "path" and not (ROOT / entry[1]).is_file():
        pytest.skip(f"{entry[1]} is not in this tree yet (the policy server of the deploy issue)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    settings = probe(entry, env)
    assert settings["prepared"] and not settings["torch_loaded_before"]
    assert settings["omp_wait_policy"] == settings["env_wait_policy"] == "PASSIVE"


def test_a_wait_policy_the_user_chose_is_kept():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "ACTIVE"}
    assert probe(ENTRY_POINTS["data.convert"], env)["omp_wait_policy"] == "ACTIVE"


def test_thread_count_respects_the_user_and_reserves_cores_for_workers(monkeypatch):
    monkeypatch.setattr(threads, "free_cores", lambda: 4)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.thread_count("auto", reserve=2) == 3  # the user's number wins
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.thread_count("auto") == 4
    assert threads.thread_count("auto", reserve=2) == 2
    assert threads.thread_count("auto", reserve=9) == 1
    assert threads.thread_count(5, reserve=2) == 5  # a fixed number is taken as given


def test_the_rollout_parent_shrinks_its_pool_beside_its_workers_and_restores_it(monkeypatch):
    monkeypatch.setattr(threads, "free_cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    with threads.threads_beside_workers(2) as n:
        assert n == torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with threads.threads_beside_workers(2) as n:
        assert n == 2  # the user's setting is kept
