"""The robosuite wrapper: observation contract, upright frames, deterministic seeding, bad specs."""

from __future__ import annotations

import numpy as np
import pytest

from envs import render
from envs.experts import make_expert
from envs.factory import make_env
from envs.registry import robosuite_spec
from envs.spec import EnvSpec


@pytest.fixture(scope="module")
def lift():
    env = make_env(robosuite_spec("Lift", horizon=50))
    yield env
    env.close()


@pytest.fixture(scope="module")
def lift_images():
    env = make_env(robosuite_spec("Lift", images=True, image_size=32, horizon=50))
    yield env
    env.close()


def _rollout(env, expert, seed: int, steps: int):
    obs, _ = env.reset(seed=seed)
    expert.reset(env)
    first = {k: v.copy() for k, v in obs.items()}
    actions = []
    for _ in range(steps):
        action = expert.act(env, obs)
        actions.append(action)
        obs, *_ = env.step(action)
    return first, np.array(actions)


def test_state_observations_match_the_space(lift):
    obs, info = lift.reset(seed=0)
    assert set(obs) == set(lift.observation_space.spaces) == {
        "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object-state"}
    for key, value in obs.items():
        assert value.dtype == np.float32 and value.shape == lift.observation_space[key].shape
    assert info["success"] is False and isinstance(lift.instruction, str) and lift.instruction
    obs, reward, terminated, truncated, info = lift.step(np.zeros(7, np.float32))
    assert isinstance(reward, float) and not terminated and not truncated and info["success"] is False
    with pytest.raises(ValueError, match="shape"):
        lift.step(np.zeros(3))
    frame = lift.render(size=32)  # state-only envs still render video frames
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8 and frame.std() > 10


def test_truncates_at_the_horizon(lift):
    lift.reset(seed=0)
    flags = [lift.step(np.zeros(7))[3] for _ in range(lift.env_spec.horizon)]
    assert not any(flags[:-1]) and flags[-1]


def test_same_seed_same_first_obs_and_expert_actions(lift):
    expert = make_expert(lift.env_spec, noise=0.1)
    first_a, actions_a = _rollout(lift, expert, seed=7, steps=12)
    _rollout(lift, expert, seed=8, steps=5)  # a different episode in between
    first_b, actions_b = _rollout(lift, expert, seed=7, steps=12)
    for key in first_a:
        np.testing.assert_array_equal(first_a[key], first_b[key])
    np.testing.assert_array_equal(actions_a, actions_b)
    first_c, _ = _rollout(lift, expert, seed=8, steps=0)
    assert not np.allclose(first_a["object-state"], first_c["object-state"])  # the cube moved


def test_reset_leaves_the_global_random_streams_alone(lift):
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    lift.reset(seed=3)
    np.testing.assert_array_equal(np.random.rand(3), expected)


def test_unseeded_resets_follow_the_spec_seed():
    spec = robosuite_spec("Lift", horizon=10, seed=5)
    env = make_env(spec)
    a = [env.reset()[0]["object-state"] for _ in range(2)]
    env.close()
    env = make_env(spec)
    b = [env.reset()[0]["object-state"] for _ in range(2)]
    env.close()
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.allclose(a[0], a[1])


def test_image_observations_are_upright_uint8(lift_images):
    obs, _ = lift_images.reset(seed=0)
    for cam in ("agentview", "robot0_eye_in_hand"):
        image = obs[f"{cam}_image"]
        assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
    # agentview looks at the robot across the white table: upright, the table fills the bottom
    # rows and the robot and floor the top rows.
    agent = obs["agentview_image"].astype(np.float32).mean(axis=(1, 2))
    assert agent[-8:].mean() > agent[:8].mean() + 20
    # The raw robosuite frame is the same picture upside down.
    raw = lift_images.unwrapped_robosuite._get_observations(force_update=True)["agentview_image"]
    np.testing.assert_array_equal(raw[::-1], obs["agentview_image"])


def test_render_returns_frames_at_both_qualities(lift_images):
    lift_images.reset(seed=0)
    fast = lift_images.render(size=48)
    full = lift_images.render(camera="frontview", size=48, quality="full")
    assert fast.shape == full.shape == (48, 48, 3) and fast.dtype == np.uint8
    assert fast.std() > 10 and full.std() > 10  # a picture, not a blank buffer
    # Video frames do not disturb the observation renderer.
    obs, *_ = lift_images.step(np.zeros(7))
    assert obs["agentview_image"].shape == (32, 32, 3) and obs["agentview_image"].std() > 10
    with pytest.raises(ValueError, match="known cameras"):
        lift_images.render(camera="nope")


def test_bad_specs_raise_clear_errors():
    with pytest.raises(ValueError, match="known: Lift, Stack"):
        make_env(EnvSpec("robosuite", "Juggle"))
    with pytest.raises(ValueError, match="unknown simulator"):
        make_env({"simulator": "bullet", "task": "Lift"})
    with pytest.raises(ValueError, match="image_size must be positive"):
        make_env({"simulator": "robosuite", "task": "Lift", "image_size": 0})
    with pytest.raises(ValueError, match="newer than this framework"):
        make_env({"simulator": "robosuite", "task": "Lift", "version": 99})
    with pytest.raises(ValueError, match="known cameras: .*agentview"):
        make_env(robosuite_spec("Lift", cameras=["nocam"], image_size=16))
    with pytest.raises(ValueError, match="unknown state keys"):
        make_env(robosuite_spec("Lift", state_keys=["robot0_eef_pos", "cube_velocity"]))
    with pytest.raises(ValueError, match="OSC_POSE"):
        make_expert(robosuite_spec("Lift", controller="JOINT_VELOCITY"))


def test_missing_gl_library_names_the_package(monkeypatch):
    from envs import render

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(render, "_gpu_present", lambda: False)
    monkeypatch.setattr(render.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(render.RenderingUnavailable, match="libosmesa6"):
        render.setup_rendering()


def test_rendering_prefers_a_working_egl_and_falls_back_to_osmesa(monkeypatch):
    from envs import render

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(render, "_gpu_present", lambda: False)
    monkeypatch.setattr(render, "_mesa_egl_installed", lambda: True)
    monkeypatch.setattr(render, "_egl_initialises", lambda: True)
    assert render.choose_backend() == "egl"
    monkeypatch.setattr(render, "_egl_initialises", lambda: False)  # installed but broken: OSMesa
    assert render.choose_backend() == "osmesa"
    monkeypatch.setattr(render, "_mesa_egl_installed", lambda: False)
    assert render.choose_backend() == "osmesa"
    monkeypatch.setenv("MUJOCO_GL", "osmesa")  # the user's choice wins
    monkeypatch.setattr(render, "_mesa_egl_installed", lambda: True)
    monkeypatch.setattr(render, "_egl_initialises", lambda: True)
    assert render.choose_backend() == "osmesa"


def test_egl_probe_survives_a_crashing_or_hanging_driver(monkeypatch):
    from envs import render

    monkeypatch.setattr(render, "_EGL_PROBE", "import os; os.kill(os.getpid(), 11)")  # a segfaulting driver
    assert render._egl_initialises() is False
    monkeypatch.setattr(render, "_EGL_PROBE", "import time; time.sleep(60)")  # a hanging one
    monkeypatch.setattr(render, "EGL_PROBE_TIMEOUT_S", 1.0)
    assert render._egl_initialises() is False
    monkeypatch.setattr(render, "_EGL_PROBE", "pass")
    assert render._egl_initialises() is True


@pytest.mark.skipif(not render._mesa_egl_installed(), reason="Mesa's EGL not installed")
def test_mesa_egl_initialises_where_it_is_installed():
    assert render._egl_initialises()  # the real probe: a context on the CPU's EGL device
