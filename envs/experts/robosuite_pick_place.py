"""Pick-and-place experts: Lift (pick and lift), Stack (onto the other cube), PickPlaceCan (into its bin).

Phases: above the object -> down to it -> close -> lift -> (carry above the goal -> lower ->
open -> retreat). The grasp yaw follows the object's yaw modulo its symmetry, so the fingers
close on flat faces. If the object slips out while carrying, the expert starts over.
"""

from __future__ import annotations

import numpy as np

from envs.experts.robosuite_base import CLOSE, DOWN, OPEN, RobosuiteExpert, rot_z, wrap, yaw_of

ABOVE, DESCEND, GRASP, LIFT, CARRY, LOWER, RELEASE, RETREAT = range(8)


class PickPlaceExpert(RobosuiteExpert):
    symmetry = np.pi / 2  # yaw period of the object (a cube); None: any yaw grasps
    hover = 0.08  # height above the object to line up before descending
    above_tolerance = 0.015  # how well lined up above the object before descending
    grasp_dz = 0.0  # grip-site height relative to the object's centre
    lift_height = 0.12  # above the object's starting height
    # above the goal (or the start, if higher) while carrying; None: lift_height
    carry_height: float | None = None
    carry_speed: float | None = None  # action cap while carrying; None: full speed
    align_tolerance = 0.01  # xy error over the goal before lowering
    lower_speed = 0.5
    close_steps = 10
    release_steps = 6

    def object_id(self) -> int:
        raise NotImplementedError

    def goal_pos(self) -> np.ndarray | None:
        """Where to put the object's centre; None: just lift it."""
        return None

    def grasp_point(self) -> np.ndarray:
        """Where the grip site closes on the object."""
        return self.body_pos(self.obj)

    def carry_orientation(self) -> np.ndarray:
        """Gripper orientation while carrying and placing."""
        return self.grasp_mat

    def setup(self) -> None:
        self.obj = self.object_id()
        self.start_z = self.body_pos(self.obj)[2]
        self.grasp_mat = DOWN
        self.heights: list[float] = []

    def grasp_orientation(self) -> np.ndarray:
        if self.symmetry is None:
            return DOWN
        yaw = wrap(yaw_of(self.body_mat(self.obj)), self.symmetry)
        return rot_z(yaw) @ DOWN

    def holding(self) -> bool:
        """Object between the fingers: close to the grip site and the gripper not shut on air."""
        near = np.linalg.norm(self.grasp_point() - self.eef_pos()) < 0.05
        return bool(near and self.gripper_width() > 0.005)

    def plan(self):
        grasp = self.grasp_point()
        eef = self.eef_pos()
        if self.phase == ABOVE:
            self.grasp_mat = self.grasp_orientation()
            target = grasp + np.array([0.0, 0.0, self.hover])
            lined_up = self.pos_error(target) < self.above_tolerance and self.rot_error(self.grasp_mat) < 0.1
            if lined_up or self.phase_steps > 80:
                self.next_phase()
            return target, self.grasp_mat, OPEN, None
        if self.phase == DESCEND:
            target = grasp + np.array([self.jitter[0], self.jitter[1], self.grasp_dz])
            if self.pos_error(target) < 0.008 or self.phase_steps > 40:
                self.grasp_target = target
                self.next_phase()
            return target, self.grasp_mat, OPEN, 0.6
        if self.phase == GRASP:
            if self.phase_steps >= self.close_steps:
                self.next_phase()
            return self.grasp_target, self.grasp_mat, CLOSE, None
        if self.phase > GRASP and self.phase < RELEASE and not self.holding():
            self.phase, self.phase_steps, self.heights = ABOVE, 0, []  # dropped it: start over
            return self.plan()
        goal = self.goal_pos()
        mat = self.carry_orientation()  # any turn for placing starts while lifting, not while moving
        if self.phase == LIFT:
            target = np.array([eef[0], eef[1], self.start_z + self.lift_height])
            if goal is not None and eef[2] > self.start_z + self.lift_height - 0.02:
                self.next_phase()
            return target, mat, CLOSE, None
        # carry the object so that its centre, not the grip site, lands on the goal
        offset = self.body_pos(self.obj) - eef
        if self.phase == CARRY:
            target = goal - offset
            target[2] = max(goal[2], self.start_z) + (self.carry_height or self.lift_height) - offset[2]
            if np.linalg.norm((target - eef)[:2]) < self.align_tolerance and self.rot_error(mat) < 0.05:
                self.next_phase()
            return target, mat, CLOSE, self.carry_speed
        if self.phase == LOWER:
            target = goal - offset
            self.heights.append(eef[2])
            # Let go at the goal, or where the object stopped going down (resting on something).
            stalled = len(self.heights) > 10 and self.heights[-10] - eef[2] < 0.002
            if self.pos_error(target) < 0.01 or stalled or self.phase_steps > 60:
                self.next_phase()
            return target, mat, CLOSE, self.lower_speed
        if self.phase == RELEASE:
            if self.phase_steps >= self.release_steps:
                self.retreat_to = eef + np.array([0.0, 0.0, 0.1])
                self.next_phase()
            return eef, mat, OPEN, None
        return self.retreat_to, mat, OPEN, None  # RETREAT: up and away from the placed object


class LiftExpert(PickPlaceExpert):
    # The open gripper (8 cm) spans the cube's diagonal (5.7 cm) and closing squares it up, so
    # Lift skips turning to the cube's yaw: shorter demonstrations, equally reliable.
    symmetry = None
    def object_id(self) -> int:
        return self.rs.cube_body_id


class StackExpert(PickPlaceExpert):
    def object_id(self) -> int:
        return self.rs.cubeA_body_id

    def goal_pos(self) -> np.ndarray:
        # cubeA (half size 0.02) resting on cubeB (half size 0.025)
        return self.body_pos(self.rs.cubeB_body_id) + np.array([0.0, 0.0, 0.045])


class CanExpert(PickPlaceExpert):
    symmetry = None
    carry_height = 0.08
    # Where in its target bin quadrant to put the can: not the quadrant's centre, which lies at the
    # edge of the Panda's reach, but 3 cm / 4 cm in from its corner nearest the robot.
    bin_margin = np.array([0.03, 0.04])

    def object_id(self) -> int:
        return self.rs.obj_body_id["Can"]

    def goal_pos(self) -> np.ndarray:
        # robosuite's success region for the can's quadrant (PickPlace.not_in_bin, bin id 3):
        # x in (bin2_x, bin2_x + size_x / 2), y in (bin2_y, bin2_y + size_y / 2).
        low = self.rs.bin2_pos[:2]
        x, y = low + self.bin_margin + np.abs(self.jitter[:2])
        return np.array([x, y, self.rs.bin2_pos[2] + 0.06])
