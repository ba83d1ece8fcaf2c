"""Shared machinery of the scripted robosuite experts: poses read from the sim, P-control to
waypoints in OSC_POSE delta actions, a phase counter, and optional noise for diverse demos.

Action layout (OSC_POSE delta, robosuite's Panda default): [dx, dy, dz, rx, ry, rz, gripper] in
[-1, 1]; positions scale to +-5 cm and rotations (axis-angle, world frame) to +-0.5 rad per step;
gripper -1 opens, +1 closes.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

POS_SCALE = 0.05  # metres per unit action
ROT_SCALE = 0.5  # radians per unit action
OPEN, CLOSE = -1.0, 1.0
# The Panda's home orientation, made exactly vertical: pointing down (grip-site z), fingers
# closing along the grip-site x axis, which is the world y axis here. The frame is Rz(90) Rx(180).
DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def yaw_of(mat: np.ndarray) -> float:
    """Heading of a body's x axis in the world xy plane."""
    return float(np.arctan2(mat[1, 0], mat[0, 0]))


def wrap(angle: float, period: float) -> float:
    """`angle` folded into [-period/2, period/2) (symmetric objects look the same every `period`)."""
    return float((angle + period / 2) % period - period / 2)


class RobosuiteExpert:
    """Base class: subclasses implement `plan(env)` -> (target_pos, target_mat, gripper, done).

    `noise` is the standard deviation of Gaussian noise added to the arm's action (units of the
    action, so 0.05 is a small tremor) and also jitters grasp points by up to `noise` x 2 cm; both
    draw from a generator seeded by the episode seed, so noisy demos stay reproducible.
    """

    # P gains: the action that would close the whole error in one step (the controller lags, so
    # the arm approaches smoothly); the speed and rotation caps below limit large errors.
    pos_gain = 1.0 / POS_SCALE
    rot_gain = 1.0 / ROT_SCALE
    max_pos_action = 1.0
    # Tilt corrections stay gentle (large ones swing the wrist into its joint limits); yaw may be quick.
    max_rot_action = np.array([0.3, 0.3, 1.0])

    def __init__(self, noise: float = 0.0) -> None:
        if noise < 0:
            raise ValueError(f"expert noise must be >= 0, got {noise}")
        self.noise = float(noise)
        self.rng = np.random.default_rng(0)

    # -- sim access ---------------------------------------------------------------------
    def reset(self, env) -> None:
        self.rs = env.unwrapped_robosuite
        self.sim = self.rs.sim
        self.robot = self.rs.robots[0]
        self.eef_site = self.robot.eef_site_id["right"]
        seed = env.episode_seed if env.episode_seed is not None else 0
        self.rng = np.random.default_rng([seed, 7])
        self.phase = 0
        self.phase_steps = 0
        self.t = 0
        self.jitter = self.rng.uniform(-1.0, 1.0, size=3) * 0.02 * self.noise
        self.setup()

    def setup(self) -> None:
        """Per-episode preparation (read initial poses)."""

    def eef_pos(self) -> np.ndarray:
        return np.array(self.sim.data.site_xpos[self.eef_site])

    def eef_mat(self) -> np.ndarray:
        return np.array(self.sim.data.site_xmat[self.eef_site]).reshape(3, 3)

    def body_pos(self, body_id: int) -> np.ndarray:
        return np.array(self.sim.data.body_xpos[body_id])

    def body_mat(self, body_id: int) -> np.ndarray:
        return np.array(self.sim.data.body_xmat[body_id]).reshape(3, 3)

    def gripper_width(self) -> float:
        """Distance between the two finger joints (about 0.08 open, ~0 closed on nothing)."""
        qpos = self.sim.data.qpos[self.robot._ref_gripper_joint_pos_indexes["right"]]
        return float(qpos[0] - qpos[1])

    # -- control ------------------------------------------------------------------------
    def pos_error(self, target: np.ndarray) -> float:
        return float(np.linalg.norm(target - self.eef_pos()))

    def rot_error(self, target_mat: np.ndarray) -> float:
        return float(np.linalg.norm(Rotation.from_matrix(target_mat @ self.eef_mat().T).as_rotvec()))

    def next_phase(self) -> None:
        self.phase += 1
        self.phase_steps = 0

    def pose_action(self, target_pos: np.ndarray, target_mat: np.ndarray, gripper: float,
                    speed: float | None = None) -> np.ndarray:
        speed = self.max_pos_action if speed is None else speed
        dpos = (target_pos - self.eef_pos()) * self.pos_gain
        norm = np.linalg.norm(dpos)
        if norm > speed:  # keep the direction, cap the speed
            dpos *= speed / norm
        drot = Rotation.from_matrix(target_mat @ self.eef_mat().T).as_rotvec() * self.rot_gain
        drot = np.clip(drot, -self.max_rot_action, self.max_rot_action)
        action = np.concatenate([dpos, drot, [gripper]])
        if self.noise > 0:
            action[:6] += self.rng.normal(0.0, self.noise, size=6)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def act(self, env, obs: dict) -> np.ndarray:
        target_pos, target_mat, gripper, speed = self.plan()
        self.phase_steps += 1
        self.t += 1
        return self.pose_action(target_pos, target_mat, gripper, speed)

    def plan(self) -> tuple[np.ndarray, np.ndarray, float, float | None]:
        raise NotImplementedError
