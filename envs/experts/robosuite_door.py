"""Door expert: grasp the lever handle from the front, turn it down, pull the door open.

The lever must turn about 1.2 rad before the latch clears the frame, so the gripper approaches
horizontally (pointing into the door, fingers closing on the top and bottom of the lever) and
turns the handle by rolling its wrist. Every target is the grasp pose carried along by where
the latch *should* be: the latch rotated about its own axis to the desired handle angle and
the door rotated about its hinge to the desired opening angle.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from envs.experts.robosuite_base import CLOSE, OPEN, RobosuiteExpert

ORIENT, APPROACH, INSERT, GRASP, TURN, PULL = range(6)
LEVER_OFFSET = np.array([0.10, -0.10, 0.0])  # grasp point on the lever bar, in the latch frame
# Gripper axes in the latch frame: approach (z) along the latch axis into the door, fingers (x)
# closing across the lever, so turning the handle is a roll of the wrist.
GRIP_IN_LATCH = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
# The same approach with the fingers along the lever (the grip rolled +90 deg about the latch axis).
# Turning to it first and rolling from there keeps the wrist clear of its joint limits: a direct
# turn from the home orientation drives joint 6 into its stop.
PRE_GRIP_IN_LATCH = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
HANDLE_GOAL = 1.35  # rad; the latch clears the frame from about 1.15
DOOR_GOAL = 0.4  # rad (the hinge limit); success from 0.3
STANDOFF = 0.08  # m in front of the lever before moving onto it


def _rotate_about(axis: np.ndarray, angle: float) -> np.ndarray:
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()


class DoorExpert(RobosuiteExpert):
    max_rot_action = np.array([0.6, 0.6, 0.6])

    def setup(self) -> None:
        model = self.sim.model
        door = self.rs.door
        self.latch = model.body_name2id(door.latch_body)
        self.hinge_joint = model.joint_name2id(door.joints[0])
        self.latch_joint = model.joint_name2id(door.joints[1])
        self.handle_goal = 0.0
        self.door_goal = 0.0
        self.offset = LEVER_OFFSET + np.array([self.jitter[0], 0.0, 0.0])
        self.grip = GRIP_IN_LATCH

    def _latch_pose(self, handle: float, opening: float) -> tuple[np.ndarray, np.ndarray]:
        """Where the latch frame would be with the handle at `handle` and the door at `opening`."""
        data = self.sim.data
        pos = np.array(data.body_xpos[self.latch])
        mat = np.array(data.body_xmat[self.latch]).reshape(3, 3)
        turn = _rotate_about(data.xaxis[self.latch_joint], handle - data.qpos[self.rs.handle_qpos_addr])
        mat = turn @ mat  # the pivot stays where it is
        swing = _rotate_about(data.xaxis[self.hinge_joint], opening - data.qpos[self.rs.hinge_qpos_addr])
        anchor = np.array(data.xanchor[self.hinge_joint])
        return anchor + swing @ (pos - anchor), swing @ mat

    def _grip_pose(self, handle: float, opening: float, standoff: float = 0.0, grip_in_latch=None):
        pos, mat = self._latch_pose(handle, opening)
        grip = mat @ (self.grip if grip_in_latch is None else grip_in_latch)
        return pos + mat @ self.offset - grip[:, 2] * standoff, grip

    def plan(self):
        qpos = self.sim.data.qpos
        handle, opening = float(qpos[self.rs.handle_qpos_addr]), float(qpos[self.rs.hinge_qpos_addr])
        if self.phase == ORIENT:
            target, mat = self._grip_pose(handle, opening, 1.5 * STANDOFF, PRE_GRIP_IN_LATCH)
            if self.rot_error(mat) < 0.2 or self.phase_steps > 80:
                self.next_phase()
            return target, mat, OPEN, None
        if self.phase == APPROACH:
            target, mat = self._grip_pose(handle, opening, STANDOFF)
            if (self.pos_error(target) < 0.015 and self.rot_error(mat) < 0.1) or self.phase_steps > 120:
                self.next_phase()
            return target, mat, OPEN, None
        if self.phase == INSERT:
            target, mat = self._grip_pose(handle, opening)
            if self.pos_error(target) < 0.01 or self.phase_steps > 40:
                self.next_phase()
            return target, mat, OPEN, 0.5
        if self.phase == GRASP:
            target, mat = self._grip_pose(handle, opening)
            if self.phase_steps >= 8:
                self.handle_goal, self.door_goal = handle, opening
                self.next_phase()
            return target, mat, CLOSE, None
        if self.phase == TURN:
            self.handle_goal = min(self.handle_goal + 0.08, HANDLE_GOAL)
            if handle > HANDLE_GOAL - 0.2 or self.phase_steps > 80:
                self.next_phase()
        else:  # PULL, with the handle held down
            self.door_goal = min(self.door_goal + 0.03, DOOR_GOAL)
        target, mat = self._grip_pose(self.handle_goal, self.door_goal)
        return target, mat, CLOSE, None
