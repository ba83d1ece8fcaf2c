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
    above_tolerance = 0.005  # the inner finger has to go down into the nut's hole
    grasp_dz = 0.004  # keeps the fingertips off the table
    lift_height = 0.15  # the nut's bottom clears the peg top (0.95 m) before it moves over
    carry_height = 0.05
    align_tolerance = 0.003
    lower_speed = 0.4
    carry_speed = 0.6  # at full speed the nut's inertia can tilt it in the grip
    close_steps = 12
    max_rot_action = np.array([0.3, 0.3, 0.5])

    def object_id(self) -> int:
        return self.rs.obj_body_id["SquareNut"]

    def setup(self) -> None:
        super().setup()
        self.peg = self.rs.peg1_body_id
        # Grip the side wall nearer the robot (the shorter reach).
        centre, mat = self.body_pos(self.obj), self.body_mat(self.obj)
        walls = [centre + mat @ np.array([0.0, s * WALL_Y, 0.0]) for s in (1, -1)]
        self.wall_side = 1.0 if walls[0][0] <= walls[1][0] else -1.0

    def grasp_point(self) -> np.ndarray:
        local = np.array([self.jitter[0] * 0.5, self.wall_side * WALL_Y, 0.0])
        return self.body_pos(self.obj) + self.body_mat(self.obj) @ local

    def grasp_orientation(self) -> np.ndarray:
        # The fingers (grip-site x) close across the wall, i.e. along the nut's y axis; the grip
        # looks the same turned half a circle, so pick the hand yaw in [-45, 135) degrees: the
        # Panda's last joint (about 0.8 - yaw) keeps 30 degrees from its stops even after the
        # squaring turn of up to 45 degrees.
        yaw = np.pi / 4 + wrap(yaw_of(self.body_mat(self.obj)) - np.pi / 4, np.pi)
        return rot_z(yaw) @ DOWN

    def carry_orientation(self) -> np.ndarray:
        # The smallest turn that squares the nut's sides with the peg's (larger, faster turns
        # let the nut slip and tilt in the grip).
        misalign = wrap(yaw_of(self.body_mat(self.obj)), np.pi / 2)
        return rot_z(-misalign) @ self.eef_mat()

    def goal_pos(self) -> np.ndarray:
        peg = self.body_pos(self.peg)
        drop_z = peg[2] + PEG_HALF_HEIGHT + NUT_HALF_HEIGHT + DROP_CLEARANCE
        return np.array([peg[0], peg[1], drop_z])
