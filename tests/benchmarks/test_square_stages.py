"""benchmarks/square_stages.py: the stage an episode reached, read from the simulator without changing it."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.square_stages import STAGES, make_staged_env, stage_counts
from envs.experts import make_expert
from envs.registry import robosuite_spec


@pytest.fixture(scope="module")
def square():
    env = make_staged_env(robosuite_spec("NutAssemblySquare", horizon=300))
    yield env
    env.close()


def test_the_expert_passes_every_stage_in_order_and_the_return_is_the_furthest(square):
    expert = make_expert(square.env_spec)
    obs, _ = square.reset(seed=3)
    expert.reset(square)
    seen, ret, success = [], 0.0, False
    for _ in range(square.env_spec.horizon):
        obs, reward, success, truncated, info = square.step(expert.act(square, obs))
        ret += reward
        if not seen or seen[-1] != info["stage"]:
            seen.append(info["stage"])
        if success or truncated:
            break
    assert success  # the scripted expert solves this seed (as it does for every demo it writes)
    assert ret == len(STAGES) - 1
    order = [STAGES.index(s) for s in seen]
    assert order == sorted(order) and seen[-1] == "on-peg"
    assert {"grasped", "lifted", "over-peg"} <= set(seen)  # the stages between are reached on the way


def test_an_idle_arm_reaches_no_stage_and_the_dynamics_are_untouched(square):
    from envs.factory import make_env

    plain = make_env(robosuite_spec("NutAssemblySquare", horizon=300))
    try:
        a, _ = square.reset(seed=5)
        b, _ = plain.reset(seed=5)
        rewards = []
        for t in range(15):
            action = np.zeros(7)
            action[0] = 0.3 if t % 2 else -0.3
            a, r, *_ = square.step(action)
            b, *_ = plain.step(action)
            rewards.append(r)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])  # reading the stages moves nothing
        assert sum(rewards) == 0.0
    finally:
        plain.close()


def test_only_square_has_stages_and_error_episodes_are_not_counted():
    with pytest.raises(ValueError, match="NutAssemblySquare only, got task 'Lift'"):
        make_staged_env(robosuite_spec("Lift"))
    episodes = [{"return": 5.0, "error": None}, {"return": 1.0, "error": None},
                {"return": 0.0, "error": "worker died"}, {"return": 1.0, "error": None}]
    assert stage_counts(episodes) == [0, 2, 0, 0, 0, 1]
