"""NutAssemblySquare expert: grasp the square nut by a side wall, square it to the peg, hold it
level just above the peg and let it drop over the peg.

Why a side wall and not the handle: held by the handle, the nut pivots between the fingers
under gravity (about 33 degrees, where its weight's torque meets the fingers' torsional friction)
and a nut tilted that much jams on the peg. The side wall along the nut's x axis, gripped at
the nut's middle, is within about a centimetre of the centre of mass, so the nut stays level.
The hole (4.55 cm) leaves the square peg (3.2 cm) under 7 mm of play per side when their sides
are parallel, so the nut's yaw is brought to a multiple of 90 degrees before the drop.
"""

from __future__ import annotations

import numpy as np

from envs.experts.robosuite_base import DOWN, rot_z, wrap, yaw_of
from envs.experts.robosuite_pick_place import PickPlaceExpert

WALL_Y = 0.03325  # the side walls' centre lines, in the nut frame
NUT_HALF_HEIGHT = 0.01
PEG_HALF_HEIGHT = 0.1
DROP_CLEARANCE = 0.01  # nut bottom above the peg top when released


class SquareNutExpert(PickPlaceExpert):
    hover = 0.06
    grasp_dz = 0.004  # keeps the fingertips off the table
    lift_height = 0.15
    align_tolerance = 0.003
    lower_speed = 0.4
    close_steps = 12

    def object_id(self) -> int:
        return self.rs.obj_body_id["SquareNut"]

    def setup(self) -> None:
        super().setup()
        self.peg = self.rs.peg1_body_id
        # Grip the side wall nearer the robot (the shorter reach).
        walls = [self.body_pos(self.obj) + self.body_mat(self.obj) @ np.array([0.0, s * WALL_Y, 0.0]) for s in (1, -1)]
        self.wall_side = 1.0 if walls[0][0] <= walls[1][0] else -1.0

    def grasp_point(self) -> np.ndarray:
        local = np.array([self.jitter[0] * 0.5, self.wall_side * WALL_Y, 0.0])
        return self.body_pos(self.obj) + self.body_mat(self.obj) @ local

    def grasp_orientation(self) -> np.ndarray:
        # The fingers (grip-site x) close across the wall, i.e. along the nut's y axis; the grip
        # looks the same turned half a circle.
        return rot_z(wrap(yaw_of(self.body_mat(self.obj)), np.pi)) @ DOWN

    def carry_orientation(self) -> np.ndarray:
        # Turn the grip by whatever squares the nut's sides with the peg's; of the turns that do,
        # take the one that brings the hand nearest its home yaw (the wrist joint has limits).
        misalign = wrap(yaw_of(self.body_mat(self.obj)), np.pi / 2)
        if abs(misalign) < 0.02:
            return self.eef_mat()
        hand_yaw = yaw_of(self.eef_mat() @ DOWN.T)
        turn = min((-misalign + k * np.pi / 2 for k in (-1, 0, 1)), key=lambda d: abs(wrap(hand_yaw + d, 2 * np.pi)))
        return rot_z(turn) @ self.eef_mat()

    def goal_pos(self) -> np.ndarray:
        peg = self.body_pos(self.peg)
        drop_z = peg[2] + PEG_HALF_HEIGHT + NUT_HALF_HEIGHT + DROP_CLEARANCE
        return np.array([peg[0], peg[1], drop_z])
