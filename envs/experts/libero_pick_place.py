"""Scripted pick-and-place expert for LIBERO tasks whose goal is one `(In obj region)` or `(On obj target)`
predicate (every LIBERO-Object task, most LIBERO-Spatial ones), with privileged poses.

The simulator runs in another process (envs/libero_env.py); the expert reads it through `env.scene()`
once per step: the grip site's pose, every body's pose and the world bounding box of its collision
geoms, the target site. Phases: above the object -> down to a grasp height taken from its collision
box -> close -> lift -> carry above the target -> lower -> open -> retreat. The fingers close across the
object's footprint; where the palm would touch a tall neighbour the hand turns or the grasp slides along a
long object; a bowl is taken by its rim. It acts in LIBERO's
OSC_POSE deltas (robosuite 1.4: +-5 cm and +-0.5 rad per unit, world-frame rotations), so
envs/experts/robosuite_base.py's scales and P-control apply.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from envs.experts.robosuite_base import CLOSE, OPEN, POS_SCALE, ROT_SCALE, rot_z, wrap, yaw_of

ABOVE, DESCEND, GRASP, LIFT, CARRY, LOWER, RELEASE, RETREAT = range(8)
EEF_SITE = "gripper0_grip_site"
GRASP_TURNS = np.radians([0, 15, -15, 30, -30, 40, -40])  # extra turns of the hand tried at the grasp
GRASP_SHIFTS = (0.0, 0.012, -0.012, 0.024, -0.024)  # metres along a long object's axis
MAX_GRASP_WIDTH = 0.07  # metres of footprint between the fingers (the Panda opens 8 cm)
PALM_HALF_LENGTH = 0.1  # the hand's half length along the finger axis
PALM_HEIGHT = 0.04  # the palm's lowest point above the grip site
RIM_DEPTH = 0.015  # grip a bowl's rim this far below its top
RIM_INSET = 0.012  # from the bowl's outer edge to the middle of its rim
RIM_DIRECTIONS = np.radians(np.arange(0, 360, 45))
PALM_CLEARANCE = 0.06  # clearances above this are all as good (the palm is ~6 cm thick)


def pick_place_goal(goal: list) -> tuple[str, str, str]:
    """(relation, object, target) of a one-predicate pick-and-place goal; ValueError otherwise."""
    if len(goal) != 1 or len(goal[0]) != 3 or str(goal[0][0]).lower() not in ("in", "on"):
        raise ValueError(f"the LIBERO pick-and-place expert handles one (In obj region) or (On obj target) goal, "
                         f"not {goal}")
    relation, obj, target = goal[0]
    return str(relation).lower(), str(obj), str(target)


class LiberoPickPlaceExpert:
    hover = 0.08  # above the grasp point before descending
    lift_clearance = 0.06  # the object's bottom this far above the target's top while carrying
    release_height = 0.04  # object bottom above the target's top when opening
    close_steps = 12
    release_steps = 10
    max_pos_action = 1.0
    max_rot_action = np.array([0.3, 0.3, 1.0])

    def __init__(self, noise: float = 0.0) -> None:
        if noise < 0:
            raise ValueError(f"expert noise must be >= 0, got {noise}")
        self.noise = float(noise)

    # --- poses ------------------------------------------------------------------------------------
    def _body(self, name: str) -> str:
        return name if f"body:{name}:pos" in self.scene else f"{name}_main"

    def _box(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        body = self._body(name)
        return self.scene[f"box:{body}:lo"], self.scene[f"box:{body}:hi"]

    def _target_xy_top(self) -> tuple[np.ndarray, float]:
        """Where to put the object (xy: a region site, e.g. basket_1_contain_region, or the target body) and
        the height of the target's top."""
        owner = self.target.removesuffix("_contain_region")
        top = float(self._box(owner)[1][2])
        if f"site:{self.target}:pos" in self.scene:
            return self.scene[f"site:{self.target}:pos"][:2], top
        return self.scene[f"body:{self._body(owner)}:pos"][:2], top

    # --- episode ----------------------------------------------------------------------------------
    def reset(self, env) -> None:
        self.relation, self.obj, self.target = pick_place_goal(env.task_info["goal"])
        seed = env.episode_seed if env.episode_seed is not None else 0
        self.rng = np.random.default_rng([seed, 11])
        self.scene = env.scene()
        owner = self.target.removesuffix("_contain_region")
        self.others = [o for o in env.task_info["objects"] if o not in (self.obj, owner)
                       and f"box:{self._body(o)}:lo" in self.scene]
        lo, hi = self._box(self.obj)
        self.obj_height = float(hi[2] - lo[2])
        # Grip a tall object 3.5 cm below its top, a flat one at half its height.
        self.grasp_depth = min(0.035, 0.5 * self.obj_height)
        # A bowl is hollow: its middle holds nothing to close on, so the hand takes the rim.
        self.rim = "bowl" in self.obj
        if self.rim:
            self.grasp_depth = RIM_DEPTH
        # Carry high enough for the object's bottom to clear the target's top, fixed for the episode.
        _, goal_top = self._target_xy_top()
        grasp_z = float(hi[2]) - self.grasp_depth
        self.carry_z = max(goal_top + self.lift_clearance + (grasp_z - float(lo[2])), grasp_z + 0.1)
        self.phase, self.phase_steps = ABOVE, 0

    def _next(self) -> None:
        self.phase, self.phase_steps = self.phase + 1, 0

    def _grasp_choice(self, grasp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hand orientation, xy shift of the grasp point). The fingers (closing along the grip site's x axis)
        close across the object's footprint; where the palm would touch a tall neighbour, the hand turns (up to
        GRASP_TURNS, while the footprint still fits between the fingers) and the grasp slides along a long
        object (GRASP_SHIFTS), whichever keeps the palm clearest with the least change."""
        body = self._body(self.obj)
        long_yaw = float(self.scene[f"box:{body}:long_yaw"][0])
        half_long, half_short = self.scene[f"box:{body}:half_sizes"]
        along = np.array([np.cos(long_yaw), np.sin(long_yaw)])
        best, best_score = (0.0, np.zeros(2)), -np.inf
        for turn in GRASP_TURNS:
            width = 2 * (abs(half_short * np.cos(turn)) + abs(half_long * np.sin(turn)))
            if width > MAX_GRASP_WIDTH:
                continue
            for shift in GRASP_SHIFTS:
                if abs(shift) > half_long - 0.015:  # keep the fingers on the object
                    continue
                fingers = long_yaw + np.pi / 2 + turn  # direction the fingers close along
                point = grasp.copy()
                point[:2] += shift * along
                score = min(self._palm_clearance(point, fingers), PALM_CLEARANCE) - 1e-3 * abs(turn) - 0.05 * abs(shift)
                if score > best_score:
                    best, best_score = (turn, shift * along), score
        eef_mat = self.scene[f"site:{EEF_SITE}:mat"]
        dyaw = wrap(long_yaw + np.pi / 2 + best[0] - yaw_of(eef_mat), np.pi)
        return rot_z(dyaw) @ eef_mat, best[1]

    def _rim_choice(self, grasp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hand orientation, xy shift to the rim) for a bowl: fingers closing across the rim (along the radius),
        on the side (of RIM_DIRECTIONS) where the palm stays clearest, preferring the robot's side (-x)."""
        lo, hi = self._box(self.obj)
        radius = 0.5 * float(min(hi[0] - lo[0], hi[1] - lo[1])) - RIM_INSET
        best, best_score = (0.0, np.zeros(2)), -np.inf
        for angle in RIM_DIRECTIONS:
            radial = np.array([np.cos(angle), np.sin(angle)])
            point = grasp.copy()
            point[:2] += radius * radial
            score = min(self._palm_clearance(point, angle), PALM_CLEARANCE) - 1e-3 * radial[0]
            if score > best_score:
                best, best_score = (angle, radius * radial), score
        eef_mat = self.scene[f"site:{EEF_SITE}:mat"]
        dyaw = wrap(best[0] - yaw_of(eef_mat), np.pi)
        return rot_z(dyaw) @ eef_mat, best[1]

    def _palm_clearance(self, grasp: np.ndarray, yaw: float) -> float:
        """Distance in xy from the palm (a segment along the finger axis) to the nearest other object that
        reaches above the palm's lowest point at this grasp."""
        direction = np.array([np.cos(yaw), np.sin(yaw)])
        ends = [grasp[:2] - PALM_HALF_LENGTH * direction, grasp[:2] + PALM_HALF_LENGTH * direction]
        nearest = np.inf
        for other in self.others:
            lo, hi = self._box(other)
            if hi[2] < grasp[2] + PALM_HEIGHT:
                continue
            samples = np.linspace(ends[0], ends[1], 9)
            gaps = np.maximum(np.maximum(lo[:2] - samples, samples - hi[:2]), 0.0)
            nearest = min(nearest, float(np.min(np.linalg.norm(gaps, axis=1))))
        return nearest

    def _action(self, target: np.ndarray, mat: np.ndarray, gripper: float, speed: float | None = None) -> np.ndarray:
        eef, eef_mat = self.scene[f"site:{EEF_SITE}:pos"], self.scene[f"site:{EEF_SITE}:mat"]
        dpos = (target - eef) / POS_SCALE
        cap = self.max_pos_action if speed is None else speed
        norm = np.linalg.norm(dpos)
        if norm > cap:
            dpos *= cap / norm
        drot = Rotation.from_matrix(mat @ eef_mat.T).as_rotvec() / ROT_SCALE
        drot = np.clip(drot, -self.max_rot_action, self.max_rot_action)
        action = np.concatenate([dpos, drot, [gripper]])
        if self.noise > 0:
            action[:6] += self.rng.normal(0.0, self.noise, size=6)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def act(self, env, obs: dict) -> np.ndarray:
        self.scene = env.scene()
        self.phase_steps += 1
        eef = self.scene[f"site:{EEF_SITE}:pos"]
        lo, hi = self._box(self.obj)
        center = 0.5 * (lo + hi)
        grasp = np.array([center[0], center[1], hi[2] - self.grasp_depth])
        if self.phase == ABOVE:
            self.mat, self.shift = self._rim_choice(grasp) if self.rim else self._grasp_choice(grasp)
        if self.phase <= GRASP:
            grasp[:2] += self.shift
        goal_xy, goal_top = self._target_xy_top()
        carry_z = self.carry_z
        if self.phase == ABOVE:
            target = grasp + [0, 0, self.hover]
            if np.linalg.norm(target - eef) < 0.015 or self.phase_steps > 80:
                self._next()
            return self._action(target, self.mat, OPEN)
        if self.phase == DESCEND:
            if np.linalg.norm(grasp - eef) < 0.01 or self.phase_steps > 40:
                self._next()
            return self._action(grasp, self.mat, OPEN, 0.6)
        if self.phase == GRASP:
            if self.phase_steps >= self.close_steps:
                self._next()
            return self._action(grasp, self.mat, CLOSE)
        if self.phase == LIFT:
            target = np.array([eef[0], eef[1], carry_z])
            if eef[2] > carry_z - 0.02 or self.phase_steps > 60:
                self._next()
            return self._action(target, self.mat, CLOSE)
        # The object hangs from the grip site: place by where the object is, not where the hand is.
        offset = eef[:2] - center[:2]
        if self.phase == CARRY:
            target = np.array([*(goal_xy + offset), carry_z])
            if np.linalg.norm(center[:2] - goal_xy) < 0.01 or self.phase_steps > 100:
                self._next()
            return self._action(target, self.mat, CLOSE)
        if self.phase == LOWER:
            release_z = eef[2] - (lo[2] - (goal_top + self.release_height))
            target = np.array([*(goal_xy + offset), release_z])
            if lo[2] < goal_top + self.release_height + 0.01 or self.phase_steps > 60:
                self._next()
            return self._action(target, self.mat, CLOSE, 0.5)
        if self.phase == RELEASE:
            if self.phase_steps >= self.release_steps:
                self._next()
            return np.concatenate([np.zeros(6), [OPEN]]).astype(np.float32)
        return self._action(np.array([eef[0], eef[1], carry_z]), self.mat, OPEN)
