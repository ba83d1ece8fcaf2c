"""Rollout runner on a fake env in spawned workers: receding horizon, history, seeds, errors, videos."""

from __future__ import annotations

import math

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from envs.seeds import EVAL_SEED_START
from rollouts.options import RolloutOptions, VideoOptions
from rollouts.runner import EnvBuildError, Runner, run
from rollouts.stats import mcnemar_exact, summarize, wilson_interval
from rollouts.video import VideoDirError, check_writable_dir, video_filename, write_video
from tests.envs import fake_env

FACTORY = f"{fake_env.__name__}:make_env"
S0 = EVAL_SEED_START


def opts(n_episodes: int, **kwargs) -> RolloutOptions:
    return RolloutOptions(n_episodes=n_episodes, env_factory=FACTORY, progress=False, **kwargs)


class ChunkPolicy:
    """Returns chunks [B, T, 2] whose k-th action is (k + 1, 0); records what it was given."""

    def __init__(self, n_obs_steps: int = 2, n_action_steps: int = 3, horizon: int = 5) -> None:
        self.config = {"n_obs_steps": n_obs_steps, "n_action_steps": n_action_steps}
        self.horizon = horizon
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.keys: list[list[str]] = []

    def predict_action(self, obs, goal):
        assert torch.is_inference_mode_enabled()
        state, task = obs["state"], goal["task"]
        assert state.dtype == torch.float32 and task.dtype == torch.int64 and state.shape[0] == task.shape[0]
        self.calls.append((state.clone(), task.clone()))
        self.keys.append(sorted(obs))
        action = torch.zeros(task.shape[0], self.horizon, 2)
        action[:, :, 0] = torch.arange(1, self.horizon + 1)
        return action


def _tasks(**spec):
    return [{"name": "fake", "instruction": "x", "env_spec": {"horizon": 10, **spec}}]


def test_receding_horizon_history_and_seeds() -> None:
    policy = ChunkPolicy(n_obs_steps=2, n_action_steps=3)
    m = run(policy, _tasks(), opts(2, workers=2))
    assert [r["steps"] for r in m["episodes"]] == [10, 10]
    assert [r["seed"] for r in m["episodes"]] == [S0, S0 + 1]
    assert all(r["return"] == 10.0 and not r["success"] and r["error"] is None for r in m["episodes"])
    # Per episode: ceil(10 / 3) = 4 re-plans, each seeing the last To = 2 observations, padded at the start.
    seen: dict[int, list] = {}
    for state, _ in policy.calls:
        assert state.shape[1:] == (2, 4)
        for row in state:
            seen.setdefault(int(row[0, 1]), []).append((row[:, 0].tolist(), row[-1, 2].item()))
    assert sorted(seen) == [S0, S0 + 1]  # each env reports its own seed
    for history in seen.values():
        assert [h[0] for h in history] == [[0, 0], [2, 3], [5, 6], [8, 9]]
        # Only the first Ta = 3 actions of each chunk ran: the last executed one is action 3.
        assert [h[1] for h in history] == [0, 3, 3, 3]
    assert m["env_steps"] == 20 and m["env_steps_per_s"] > 0 and m["episodes_per_s"] > 0


def test_fewer_actions_per_chunk_at_evaluation() -> None:
    policy = ChunkPolicy(n_obs_steps=1, n_action_steps=3)
    m = run(policy, _tasks(), opts(1, workers=1, n_action_steps=2))  # re-plan every 2 steps, not 3
    assert m["episodes"][0]["steps"] == 10 and len(policy.calls) == 5 and m["n_action_steps"] == 2
    with pytest.raises(ValueError, match="n_action_steps=4 exceeds the 3 actions the policy predicts"):
        run(ChunkPolicy(n_obs_steps=1, n_action_steps=3), _tasks(), opts(1, workers=1, n_action_steps=4))


def test_success_stopping_and_rates() -> None:
    tasks = _tasks(succeed_at=4, succeed_seeds=[S0, S0 + 2])
    with Runner(tasks, opts(4, workers=2)) as runner:
        m = runner.run(ChunkPolicy())
        assert [r["success"] for r in m["episodes"]] == [True, False, True, False]
        assert [r["steps"] for r in m["episodes"]] == [4, 10, 4, 10]  # stops at the success step
        assert m["success_rate"] == 0.5 and m["success_ci95"] == pytest.approx(list(wilson_interval(2, 4)))
        assert m["per_task"]["fake"]["n_episodes"] == 4
        kept = runner.run(ChunkPolicy(), runner.options.replace(n_episodes=2, stop_on_success=False, max_steps=7))
        assert [r["steps"] for r in kept["episodes"]] == [7, 7] and kept["episodes"][0]["success"]
        with pytest.raises(ValueError, match="need a new Runner"):
            runner.run(ChunkPolicy(), runner.options.replace(workers=3))


def test_env_error_and_worker_crash_mark_episodes_and_run_completes(tmp_path) -> None:
    tasks = _tasks(horizon=6, succeed_at=5, raise_on_seeds=[S0 + 1], crash_on_seeds=[S0 + 2])
    m = run(ChunkPolicy(), tasks, opts(5, workers=2, video=VideoOptions(n=5, dir=tmp_path)))
    eps = m["episodes"]
    assert [r["episode"] for r in eps] == [0, 1, 2, 3, 4]
    assert "RuntimeError: boom at seed" in eps[1]["error"] and not eps[1]["success"]
    assert "exited with code 3" in eps[2]["error"] and not eps[2]["success"]
    assert [r["success"] for r in eps] == [True, False, False, True, True]
    assert m["n_errors"] == 2 and m["success_rate"] == pytest.approx(3 / 5)
    # Videos: successes and the env error are filmed (named by outcome); the crashed worker's frames are lost.
    names = sorted(p.name for p in tmp_path.glob("*.mp4"))
    assert names == ["ep0000_fake_success.mp4", "ep0001_fake_error.mp4", "ep0003_fake_success.mp4",
                     "ep0004_fake_success.mp4"]
    assert eps[2]["video"] is None and eps[0]["video"].endswith("ep0000_fake_success.mp4")
    assert len(imageio.mimread(eps[0]["video"])) == 6  # reset frame + 5 steps


def test_hung_worker_times_out() -> None:
    with Runner(_tasks(horizon=4, hang_on_seeds=[S0]), opts(2, workers=1, worker_timeout_s=4)) as runner:
        m = runner.run(ChunkPolicy())
    assert "timed out" in m["episodes"][0]["error"]
    assert m["episodes"][1]["error"] is None and m["episodes"][1]["steps"] == 4  # a fresh worker took over


def test_env_that_cannot_be_built_stops_the_run() -> None:
    with pytest.raises(EnvBuildError, match="task .fake. cannot be used.*fake simulator is not installed"):
        run(ChunkPolicy(), _tasks(fail_build=True), opts(2, workers=1))


def test_workers_dying_at_startup_stop_the_run() -> None:
    with pytest.raises(EnvBuildError, match="3 fresh workers in a row died.*exited with code 4"):
        run(ChunkPolicy(), _tasks(crash_on_build=True), opts(10, workers=1))


def test_multi_task_spread_evenly_and_goal_matches_env() -> None:
    tasks = [{"name": "a", "env_spec": {"horizon": 5, "task_id": 0, "succeed_at": 1}},
             {"name": "b", "env_spec": {"horizon": 5, "task_id": 1}}]
    policy = ChunkPolicy(n_obs_steps=1, n_action_steps=2)
    m = run(policy, tasks, opts(5, workers=2))
    assert [r["task"] for r in m["episodes"]] == [0, 1, 0, 1, 0]
    assert m["per_task"]["a"]["n_episodes"] == 3 and m["per_task"]["b"]["n_episodes"] == 2
    assert m["per_task"]["a"]["success_rate"] == 1.0 and m["per_task"]["b"]["success_rate"] == 0.0
    for state, task in policy.calls:
        assert state[:, -1, 3].long().tolist() == task.tolist()


def test_workers_take_episodes_task_by_task_and_keep_one_env() -> None:
    # each task's env may be the only one open in its worker (a LIBERO env takes about 1 GB)
    tasks = [{"name": n, "env_spec": {"horizon": 4, "task_id": i, "max_open": 1}} for i, n in enumerate("abc")]
    m = run(ChunkPolicy(n_obs_steps=1, n_action_steps=2), tasks, opts(12, workers=2))
    assert [r["error"] for r in m["episodes"]] == [None] * 12
    assert [r["task"] for r in m["episodes"]] == [0, 1, 2] * 4  # records stay in episode order
    assert [r["seed"] for r in m["episodes"]] == list(range(S0, S0 + 12))


def test_seeds_are_distinct_and_disjoint_from_demos() -> None:
    assert RolloutOptions(n_episodes=3).episode_seeds() == [S0, S0 + 1, S0 + 2]
    assert RolloutOptions(n_episodes=2, seed_offset=50).episode_seeds(demo_seeds=range(5)) == [50, 51]
    assert RolloutOptions(n_episodes=2, seeds=[7, 9]).episode_seeds(demo_seeds=range(5)) == [7, 9]
    with pytest.raises(ValueError, match="demonstration seeds"):
        RolloutOptions(n_episodes=2, seeds=[3, 9]).episode_seeds(demo_seeds=range(5))
    with pytest.raises(ValueError, match="distinct"):
        RolloutOptions(n_episodes=2, seeds=[9, 9])
    with pytest.raises(ValueError, match="one seed per episode"):
        RolloutOptions(n_episodes=3, seeds=[1, 2])
    with pytest.raises(ValueError, match="n_episodes must be positive"):
        RolloutOptions(n_episodes=0)
    with pytest.raises(ValueError, match="video.n must be >= 0"):
        RolloutOptions(n_episodes=1, video={"n": -1})
    # The runner checks the seeds against the demonstrations before it starts any worker.
    with pytest.raises(ValueError, match=r"evaluation seeds \[1000000\] are demonstration seeds"):
        run(ChunkPolicy(), _tasks(), opts(1), demo_seeds=[S0])


class NoisyPolicy(ChunkPolicy):
    """Chunks of torch.rand noise in the first action dimension; records the draws."""

    def __init__(self) -> None:
        super().__init__(n_obs_steps=1, n_action_steps=2)
        self.draws: list[float] = []

    def predict_action(self, obs, goal):
        action = super().predict_action(obs, goal)
        action[:, :, 1] = torch.rand(action.shape[0], action.shape[1])
        self.draws += action[:, :, 1].flatten().tolist()
        return action


def test_sampling_noise_is_seeded_on_a_forked_rng() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with Runner(_tasks(horizon=4), opts(1, workers=1, sample_seed=7)) as runner:
        a, b, c = NoisyPolicy(), NoisyPolicy(), NoisyPolicy()
        runner.run(a)
        runner.run(b)
        assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream did not move
        metrics = runner.run(c, runner.options.replace(sample_seed=8))
    assert len(a.draws) == 10 and a.draws == b.draws and a.draws != c.draws
    assert metrics["sampling_noise"] == "shared"  # what eval_info.json records for such a policy


class GeneratorPolicy(ChunkPolicy):
    """Takes one generator per row, as the diffusion policies do; records each (seed, step) draw."""

    def __init__(self) -> None:
        super().__init__(n_obs_steps=1, n_action_steps=2)
        self.draws: dict[tuple[int, int], float] = {}

    def predict_action(self, obs, goal, generator=None):
        action = super().predict_action(obs, goal)
        assert generator is not None and len(generator) == action.shape[0]
        for row, g in enumerate(generator):
            t, seed = (int(v) for v in obs["state"][row, -1, :2])
            action[row, :, 1] = torch.rand(action.shape[1], generator=g)
            self.draws[seed, t] = action[row, 0, 1].item()
        return action


def test_each_episode_draws_its_own_noise_whatever_the_workers() -> None:
    """With one worker the episodes run one by one; with three they share batches in an order set by
    timing. An episode's sampling noise comes from its own generator, so it is the same either way."""
    tasks = _tasks(horizon=6)
    one, three, other_seed = GeneratorPolicy(), GeneratorPolicy(), GeneratorPolicy()
    run(one, tasks, opts(5, workers=1, sample_seed=3))
    assert run(three, tasks, opts(5, workers=3, sample_seed=3))["sampling_noise"] == "per-episode"
    run(other_seed, tasks, opts(5, workers=3, sample_seed=4))
    assert len(one.draws) == 5 * 3 and one.draws == three.draws
    assert set(other_seed.draws) == set(one.draws) and other_seed.draws != one.draws


def test_wilson_interval_known_values() -> None:
    assert wilson_interval(8, 10) == pytest.approx((0.490160, 0.943318), abs=1e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.5 - hi + 0.5) and hi == pytest.approx(0.596168, abs=1e-5)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    recs = [{"task": 0, "success": True, "steps": 3, "return": 1.0, "error": None},
            {"task": 0, "success": True, "steps": 5, "return": 1.0, "error": "RuntimeError: x"}]
    s = summarize(recs, ["t"])
    assert s["n_success"] == 1 and s["n_errors"] == 1 and s["per_task"]["t"]["mean_steps"] == 4
    assert not math.isnan(s["success_ci95"][0])


def test_video_writer_and_directory_check(tmp_path) -> None:
    frames = [np.full((15, 21, 3), i * 20, dtype=np.uint8) for i in range(5)]  # odd sizes get padded
    path = write_video(tmp_path / video_filename(3, "Pick Place/Can", "failure"), frames, fps=10)
    assert path.name == "ep0003_pick-place-can_failure.mp4"
    read = imageio.mimread(path)
    assert len(read) == 5 and read[0].shape == (16, 22, 3)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(VideoDirError, match="cannot write videos"):
        check_writable_dir(blocker / "videos")
    with pytest.raises(ValueError):
        video_filename(0, "t", "maybe")


def test_obs_keys_filter_and_missing_key_stops_the_run(tmp_path) -> None:
    policy = ChunkPolicy(n_obs_steps=1, n_action_steps=4)
    policy.shape_meta = {"obs": {"state": {"shape": [4], "type": "low_dim"}}}
    with Runner(_tasks(horizon=4, image=True), opts(1, workers=1)) as runner:
        # The env's cam_image is not sent to this policy, but it can still be filmed.
        m = runner.run(policy, runner.options.replace(video={"n": 1, "dir": tmp_path, "source": "cam_image"}))
        assert m["episodes"][0]["steps"] == 4 and m["n_errors"] == 0 and policy.keys == [["state"]]
        frames = imageio.mimread(m["video_paths"][0])
        assert frames[0].shape == (8, 8, 3) and len(frames) == 5
        assert np.allclose([f[4, 4, 0] for f in frames], [0, 40, 80, 120, 160], atol=4)  # lossy H.264
        with pytest.raises(EnvBuildError, match=r"no observation \['wrist_image'\]"):
            runner.run(policy, runner.options.replace(obs_keys=["state", "wrist_image"]))


def test_mcnemar_exact_known_values() -> None:
    assert mcnemar_exact(0, 0) == 1.0  # no discordant episode: no evidence either way
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)  # five fair coins all landing one way
    assert mcnemar_exact(3, 18) == mcnemar_exact(18, 3) == pytest.approx(2 * (1 + 21 + 210 + 1330) / 2**21)
    assert mcnemar_exact(10, 10) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_progress_goes_to_a_log_file_as_lines(capsys) -> None:
    """stdout redirected (make train > log): progress lines, not a bar that shows nothing until the end."""
    run(ChunkPolicy(), _tasks(), RolloutOptions(n_episodes=2, env_factory=FACTORY, workers=1))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "rollouts: 0/2 episodes, 0 s"
    assert lines[-1].startswith("rollouts: 2/2 episodes, 0 successes, ")
