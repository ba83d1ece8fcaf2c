"""Server + client + simulated envs: eval_rollouts through the server gives the local run's actions, also
with real-time chunking under a simulated delay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rollouts.runner as runner_module
from eval_rollouts import EvalError, evaluate, load_config
from serving.model import ServedModel
from serving.server import ServerConfig
from serving.thread import ServerThread
from tests.envs import fake_env
from tests.serving.fakes import tiny_policy, write_checkpoint


def evaluate_recording(tmp_path: Path, ckpt: Path, monkeypatch, *overrides: str) -> tuple[dict, list[np.ndarray]]:
    """Run eval_rollouts' evaluate on the fake env; returns eval_info and every action sent to a worker."""
    sent: list[np.ndarray] = []
    original = runner_module.WorkerHandle.send

    def spy(self, msg, timeout_s):
        if msg[0] == "act":
            sent.append(np.array(msg[1]))
        return original(self, msg, timeout_s)

    monkeypatch.setattr(runner_module.WorkerHandle, "send", spy)
    cfg = load_config([f"checkpoint={ckpt}", "n_episodes=2", "workers=1", "video.n=0", "logger=none",
                       "progress=false", f"env_factory={fake_env.__name__}:make_env", f"out={tmp_path / 'eval'}",
                       "overwrite=true", *overrides])  # each call a fresh evaluation into the same folder
    info = evaluate(cfg)
    monkeypatch.undo()
    return info, sent


def outcomes(info: dict) -> list[tuple]:
    return [(e["seed"], e["task"], e["success"], e["steps"]) for e in info["episodes"]]


def test_remote_rollouts_equal_local_ones_with_and_without_rtc(tmp_path, monkeypatch) -> None:
    ckpt = write_checkpoint(tmp_path / "tiny.ckpt", tiny_policy())
    with ServerThread(ServedModel.load(ckpt), ServerConfig(port=0)) as server:
        for extra in ([], ["latency_ms=100", "transition=rtc"]):
            local, local_actions = evaluate_recording(tmp_path, ckpt, monkeypatch, *extra)
            remote, remote_actions = evaluate_recording(tmp_path, ckpt, monkeypatch, f"server={server.url}", *extra)
            assert outcomes(local) == outcomes(remote) and len(local_actions) == len(remote_actions) > 2
            for a, b in zip(local_actions, remote_actions):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
        # with 2 steps of delay each round executes n_action_steps - 2 actions, the last 2 run during the next request
        assert [len(a) for a in local_actions[:3]] == [2, 2, 2]
        smooth = remote["aggregate"]["transition"]
        assert smooth["mode"] == "rtc" and smooth["delay_steps"] == 2
        assert smooth["boundary_jump_max"] >= smooth["boundary_jump_p50"] >= 0 and smooth["within_chunk_p99"] >= 0


def test_zero_latency_switching_is_plain_replanning(tmp_path, monkeypatch) -> None:
    ckpt = write_checkpoint(tmp_path / "tiny.ckpt", tiny_policy())
    plain, plain_actions = evaluate_recording(tmp_path, ckpt, monkeypatch)
    switch, switch_actions = evaluate_recording(tmp_path, ckpt, monkeypatch, "latency_ms=0", "transition=switch")
    assert outcomes(plain) == outcomes(switch)
    assert all(np.array_equal(a, b) for a, b in zip(plain_actions, switch_actions))


def test_a_server_with_another_model_is_refused(tmp_path) -> None:
    ckpt = write_checkpoint(tmp_path / "tiny.ckpt", tiny_policy(seed=0))
    other = write_checkpoint(tmp_path / "other.ckpt", tiny_policy(seed=1))
    with ServerThread(ServedModel.load(other), ServerConfig(port=0)) as server:
        cfg = load_config([f"checkpoint={ckpt}", "n_episodes=2", "logger=none", f"server={server.url}",
                           f"env_factory={fake_env.__name__}:make_env", f"out={tmp_path / 'eval'}"])
        with pytest.raises(EvalError, match="another model"):
            evaluate(cfg)


def test_compile_override_is_checked(tmp_path) -> None:
    from serving.model import ServeError

    ckpt = write_checkpoint(tmp_path / "tiny.ckpt", tiny_policy())
    with pytest.raises(ServeError, match="compile"):
        ServedModel.load(ckpt, compile="fastest")
    assert ServedModel.load(ckpt, compile="none").policy.net.compile == "none"
