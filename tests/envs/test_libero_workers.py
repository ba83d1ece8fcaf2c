"""LIBERO simulator processes in rollouts: a crash is one episode's error, Ctrl-C and a dead parent end them;
the scripted expert solves episodes (needs the LIBERO environment: `make libero-env`)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import torch

from envs.experts import make_expert
from envs.factory import make_env
from envs.libero_process import LiberoProcess
from envs.processes import EnvProcess
from envs.registry import libero_spec
from rollouts.options import RolloutOptions
from rollouts.runner import run
from tests.envs import libero_targets
from tests.envs.libero_helpers import needs_libero

pytestmark = needs_libero


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    """The process has exited (or is a zombie nobody reaped yet)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_ctrl_c_leaves_the_simulator_to_its_parent_and_a_dead_parent_ends_it() -> None:
    p = LiberoProcess()
    assert os.getsid(p.proc.pid) == p.proc.pid  # not in the terminal's process group: Ctrl-C goes to the parent
    header, _ = p.request("catalog", suites=["libero_object"])
    os.kill(p.proc.pid, signal.SIGINT)  # and a SIGINT sent to it anyway is ignored
    time.sleep(0.3)
    header, _ = p.request("catalog", suites=["libero_object"])
    assert len(header["suites"]["libero_object"]) == 10
    p.close()  # the parent closing it (what the rollout runner does on Ctrl-C) ends it cleanly
    assert p.proc.returncode == 0
    holder = EnvProcess(libero_targets.hold_libero_process)
    pid = holder.conn.recv()
    holder.kill()  # a worker killed outright: its LIBERO process gets SIGTERM (parent-death signal)
    assert _gone(pid)


class ZeroPolicy:
    config = {"n_obs_steps": 1, "n_action_steps": 2}

    def predict_action(self, obs, goal):
        batch = goal["task"].shape[0]
        action = torch.zeros(batch, 2, 7)
        action[..., 6] = -1.0
        return action


def test_a_crashing_simulator_is_one_episode_error_and_the_run_goes_on() -> None:
    spec = libero_spec("libero_object", 0).to_dict()
    tasks = [{"name": spec["task"], "instruction": "x", "env_spec": spec}]
    options = RolloutOptions(n_episodes=2, workers=1, max_steps=6, progress=False, obs_keys=["ee_pos"],
                             env_factory=f"{libero_targets.__name__}:make_crash_once_env")
    m = run(ZeroPolicy(), tasks, options)
    first, second = m["episodes"]
    assert first["error"] and "LIBERO simulator process died" in first["error"]
    assert first["steps"] == libero_targets.CRASH_AT_STEP
    assert second["error"] is None and second["steps"] == 6 and not second["success"]


def test_expert_solves_two_libero_object_episodes() -> None:
    spec = libero_spec("libero_object", 0)
    env, expert = make_env(spec), make_expert(spec.to_dict())
    try:
        for seed in (0, 1):  # demonstration seeds: perturbed init states 0 and 1
            obs, info = env.reset(seed=seed)
            expert.reset(env)
            assert info["init_state"] == seed and not info["success"]
            for _ in range(spec.horizon):
                obs, _, terminated, truncated, info = env.step(expert.act(env, obs))
                if terminated or truncated:
                    break
            assert info["success"] and terminated  # LIBERO's own predicate ended the episode
            assert np.isfinite(obs["object-state"]).all()
    finally:
        env.close()


def test_generated_libero_episodes_record_states_and_replay_open_loop(tmp_path) -> None:
    from data.convert.verify import verify_store
    from data.generate import generate

    out = str(tmp_path / "two.zarr")
    store = generate("libero_object/0,libero_object/1", n_episodes=2, out=out, workers=0, progress=False)
    assert "states" in store.keys and store.n_episodes == 2
    first = store.get_episode(0, ["states", "action"])
    assert len(first["states"]) == len(first["action"])
    results = verify_store(out)
    assert [r.note for r in results] == ["", ""]
    assert all(r.success for r in results)  # the recorded actions reach LIBERO's predicate again, open loop
    assert max(r.drift_max for r in results) < 1e-3  # metres: the replay follows the recorded trajectory
