"""The LIBERO simulator process: runs under .venv-libero's interpreter, never in the main environment.

    .venv-libero/bin/python -m envs.libero_server      (started by envs/libero_env.py; PYTHONPATH=repo)

It serves one LIBERO task over stdin/stdout in the format of envs/libero_wire.py (plain data and
numeric arrays, nothing pickled), one request, one reply:

    make     {suite, task, cameras, image_size, seed}  -> {instruction, n_init_states, goal, objects, action_*}
    reset    {init_state, perturb_seed, perturb_xy, settle_steps}  -> observation
    step     {} + array "action"                       -> observation, {reward, success}
    render   {camera, size}                            -> array "frame" (upright)
    raw      {}                                        -> LIBERO's own last observation dict (frames upside down)
    scene    {}                                        -> privileged poses for scripted experts
    get_state / set_state (array "state")              -> flat MuJoCo state [time, qpos, qvel]
    catalog  {suites}                                  -> every task of those suites (name, instruction, init states)
    close

An observation is the framework's key set (see OBS_DOC in envs/libero_env.py): the official
datasets' names for the robot state, any LIBERO observation by its own name, `<camera>_image`
frames flipped upright. A request that fails answers {"error": "..."}; the process lives on.
It ignores SIGINT (its parent handles Ctrl-C and closes it) and ends at EOF or when its parent dies.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from typing import Any

import numpy as np

from envs.libero_wire import read_message, write_message


def _die_with_parent() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(0)


def _quiet() -> None:
    # robosuite and LIBERO log INFO/WARNING lines on import and on every env; keep errors only.
    for name in ("robosuite_logs", "robosuite"):
        logging.getLogger(name).setLevel(logging.ERROR)


def camera_name(camera: str) -> str:
    """Store camera name of a LIBERO camera: robot0_eye_in_hand -> eye_in_hand (as the datasets name it)."""
    return camera.removeprefix("robot0_")


class Server:
    def __init__(self) -> None:
        self.env = None
        self.cameras: list[str] = []
        self.init_states: np.ndarray | None = None
        self.task = None
        self.free_objects: dict[str, int] = {}  # object body -> flat-state index of its free joint
        self.last_raw: dict[str, Any] = {}  # LIBERO's observation from the last reset/step, as it delivered it

    # --- requests -------------------------------------------------------------------------------
    def make(self, h: dict[str, Any], a: dict) -> tuple[dict, dict]:
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        suite = benchmark.get_benchmark_dict()[h["suite"]]()
        names = suite.get_task_names()
        if h["task"] not in names:
            raise ValueError(f"{h['suite']} has no task {h['task']!r}")
        index = names.index(h["task"])
        self.task = suite.get_task(index)
        self.init_states = np.asarray(suite.get_task_init_states(index), dtype=np.float64)
        self.cameras = list(h["cameras"])
        bddl = os.path.join(get_libero_path("bddl_files"), self.task.problem_folder, self.task.bddl_file)
        size = int(h["image_size"])
        self.env = OffScreenRenderEnv(
            bddl_file_name=bddl, camera_heights=size, camera_widths=size,
            # Without cameras LIBERO still needs one name; its frames are simply not observed.
            camera_names=self.cameras or ["agentview"], use_camera_obs=bool(self.cameras),
            # LIBERO's default hard reset rebuilds the model and its renderer on every reset (seconds with
            # cameras); each episode overwrites the whole MuJoCo state with its init state anyway.
            hard_reset=False)
        self.env.seed(int(h["seed"]))
        self.env.reset()
        self.free_objects = self.object_joints()  # the model is built once (no hard reset): its joints stay
        inner = self.env.env
        low, high = inner.action_spec
        problem = inner.parsed_problem
        return {"instruction": self.task.language, "n_init_states": len(self.init_states),
                "object_joints": self.free_objects,
                "bddl_file": os.path.join(self.task.problem_folder, self.task.bddl_file),
                "goal": problem.get("goal_state", []), "objects": list(inner.objects_dict),
                "fixtures": list(inner.fixtures_dict), "action_low": low.tolist(),
                "action_high": high.tolist()}, {}

    def object_joints(self) -> dict[str, int]:
        """{object body: flat-state index of its free joint's position} (the flat state starts with the time)."""
        import mujoco

        model = self.env.sim.model._model
        out = {}
        for j in range(model.njnt):
            if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
                body = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, int(model.jnt_bodyid[j])) or f"joint{j}"
                if not body.startswith("robot"):
                    out[body] = 1 + int(model.jnt_qposadr[j])
        return out

    def observe(self, raw: dict[str, Any]) -> dict[str, np.ndarray]:
        import robosuite.utils.transform_utils as T

        self.last_raw = raw
        obs: dict[str, np.ndarray] = {}
        for k, v in raw.items():
            if k.endswith("_image"):
                continue
            obs[k] = np.atleast_1d(np.asarray(v, dtype=np.float32))
        ee_ori = np.asarray(T.quat2axisangle(np.asarray(raw["robot0_eef_quat"], dtype=np.float64)), np.float32)
        obs["ee_pos"] = obs["robot0_eef_pos"]
        obs["ee_ori"] = ee_ori
        obs["ee_states"] = np.concatenate([obs["robot0_eef_pos"], ee_ori])
        obs["gripper_states"] = obs["robot0_gripper_qpos"]
        obs["joint_states"] = obs["robot0_joint_pos"]
        for cam in self.cameras:
            # OpenGL rows run bottom-up: flip upright, as data.convert does with the datasets' frames.
            obs[f"{camera_name(cam)}_image"] = np.ascontiguousarray(raw[f"{cam}_image"][::-1])
        return obs

    def reset(self, h: dict[str, Any], a: dict) -> tuple[dict, dict]:
        k = int(h["init_state"])
        if not 0 <= k < len(self.init_states):
            raise ValueError(f"init state {k} out of range: this task has {len(self.init_states)} (0-"
                             f"{len(self.init_states) - 1})")
        self.env.reset()
        state = self.init_states[k].copy()
        if h.get("perturb_seed") is not None:
            state = self._perturbed(state, int(h["perturb_seed"]), float(h["perturb_xy"]))
        # Without LIBERO's hard reset two things outlive an episode that the flat state does not hold: the
        # solver's warm start and the gripper's accumulated command (robosuite grippers integrate their
        # action). Left over, they make two episodes from one init state differ. Both start as after a hard
        # reset (the reference evaluation's), so an episode does not depend on what its worker ran before.
        self.env.sim.data.qacc_warmstart[:] = 0
        for robot in self.env.env.robots:
            robot.gripper.current_action = np.zeros_like(robot.gripper.current_action)
        raw = self.env.set_init_state(state)
        settle = np.zeros(7)
        settle[-1] = -1.0  # no motion, gripper open: the reference scripts' dummy action
        for _ in range(int(h["settle_steps"])):
            raw, _, _, _ = self.env.step(settle)
        return {"success": bool(self.env.check_success())}, self.observe(raw)

    def _perturbed(self, state: np.ndarray, seed: int, radius: float) -> np.ndarray:
        """The state with every free object moved by up to `radius` m in x and y (seeded)."""
        rng = np.random.default_rng(seed)
        for adr in self.free_objects.values():
            state[adr:adr + 2] += rng.uniform(-radius, radius, size=2)
        return state

    def step(self, h: dict[str, Any], a: dict) -> tuple[dict, dict]:
        raw, reward, _, _ = self.env.step(np.asarray(a["action"], dtype=np.float64))
        return {"reward": float(reward), "success": bool(self.env.check_success())}, self.observe(raw)

    def render(self, h: dict[str, Any], a: dict) -> tuple[dict, dict]:
        size = int(h["size"])
        frame = self.env.sim.render(camera_name=h["camera"], width=size, height=size)
        return {}, {"frame": np.ascontiguousarray(np.asarray(frame, dtype=np.uint8)[::-1])}

    def raw(self, h: dict[str, Any], a: dict) -> tuple[dict, dict]:
        return {}, {k: np.asarray(v) for k, v in self.last_raw.items()}

    def scene(self, h: dict[str, Any], a: dict) -> tuple[dict, dict]:
        """Poses of every body and site, and each body's collision-geom bounding box (world axes), for scripted
        experts; the gripper's joint positions as "gripper:qpos"."""
        import mujoco

        model, data = self.env.sim.model._model, self.env.sim.data._data
        out: dict[str, np.ndarray] = {}
        for b in range(model.nbody):
            name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b)
            if name:
                out[f"body:{name}:pos"] = data.xpos[b].copy()
                out[f"body:{name}:quat"] = data.xquat[b].copy()
        for s in range(model.nsite):
            name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_SITE, s)
            if name:
                out[f"site:{name}:pos"] = data.site_xpos[s].copy()
                out[f"site:{name}:mat"] = data.site_xmat[s].reshape(3, 3).copy()
        lo = {b: np.full(3, np.inf) for b in range(model.nbody)}
        hi = {b: np.full(3, -np.inf) for b in range(model.nbody)}
        # body -> (volume, yaw of the long horizontal axis, its half length, the short half width)
        biggest: dict[int, tuple[float, ...]] = {}
        for g in range(model.ngeom):
            if model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0:
                continue  # visual only
            root = int(model.geom_bodyid[g])
            weld = model.body_weldid
            while model.body_parentid[root] != 0 and weld[root] == weld[model.body_parentid[root]]:
                root = int(model.body_parentid[root])  # welded child bodies count towards their object
            center, half = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
            rot = data.geom_xmat[g].reshape(3, 3)
            c = data.geom_xpos[g] + rot @ center
            ext = np.abs(rot) @ half
            lo[root] = np.minimum(lo[root], c - ext)
            hi[root] = np.maximum(hi[root], c + ext)
            # The footprint's long axis (of the body's biggest collision geom): grippers close across it.
            axes = rot * half  # columns: the geom's half-extent vectors in the world
            flat = np.linalg.norm(axes[:2], axis=0)
            long = int(np.argmax(flat * (np.abs(axes[2]) < flat + 1e-9)))
            volume = float(np.prod(2 * half))
            if volume > biggest.get(root, (-1.0,))[0]:
                horizontal = np.argsort(-flat)[:2]  # the two most horizontal extents: long, then short
                biggest[root] = (volume, float(np.arctan2(axes[1, long], axes[0, long])),
                                 float(flat[horizontal[0]]), float(flat[horizontal[1]]))
        for b in lo:
            name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b)
            if name and np.isfinite(lo[b]).all():
                out[f"box:{name}:lo"], out[f"box:{name}:hi"] = lo[b], hi[b]
                out[f"box:{name}:long_yaw"] = np.array([biggest[b][1]])
                out[f"box:{name}:half_sizes"] = np.array(biggest[b][2:])
        robot = self.env.env.robots[0]
        out["gripper:qpos"] = np.asarray(data.qpos[robot._ref_gripper_joint_pos_indexes], dtype=np.float64)
        return {}, out

    def get_state(self, h: dict[str, Any], a: dict) -> tuple[dict, dict]:
        return {}, {"state": np.asarray(self.env.get_sim_state(), dtype=np.float64)}

    def set_state(self, h: dict[str, Any], a: dict) -> tuple[dict, dict]:
        raw = self.env.regenerate_obs_from_state(np.asarray(a["state"], dtype=np.float64))
        return {"success": bool(self.env.check_success())}, self.observe(raw)

    def catalog(self, h: dict[str, Any], a: dict) -> tuple[dict, dict]:
        from libero.libero import benchmark

        out = {}
        for name in h["suites"]:
            suite = benchmark.get_benchmark_dict()[name]()
            out[name] = [{"name": t, "instruction": suite.get_task(i).language,
                          "bddl_file": f"{suite.get_task(i).problem_folder}/{suite.get_task(i).bddl_file}",
                          "n_init_states": len(suite.get_task_init_states(i))}
                         for i, t in enumerate(suite.get_task_names())]
        return {"suites": out}, {}


def serve(requests, replies) -> None:
    server = Server()
    while True:
        try:
            header, arrays = read_message(requests)
        except EOFError:
            return
        cmd = header.get("cmd")
        if cmd == "close":
            try:
                write_message(replies, {"ok": True})
            except BrokenPipeError:
                pass
            return
        handler = getattr(server, str(cmd), None) if cmd in COMMANDS else None
        try:
            if handler is None:
                raise ValueError(f"unknown request {cmd!r}")
            reply, out = handler(header, arrays)
        except Exception as err:
            tb = traceback.extract_tb(err.__traceback__)
            where = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
            reply, out = {"error": f"{type(err).__name__}: {err}{where}"}, {}
        write_message(replies, reply, out)


COMMANDS = ("make", "reset", "step", "render", "raw", "scene", "get_state", "set_state", "catalog")


def main() -> None:
    _die_with_parent()
    # The replies get the original stdout; what LIBERO or a C library prints (progress lines such as
    # "[info] Applying task order ...") goes nowhere, so it can never corrupt a message. Errors still
    # reach stderr.
    replies = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(os.devnull, "w")
    _quiet()
    serve(sys.stdin.buffer, replies)
    replies.flush()
    # Skip the interpreter's teardown: robosuite's GL contexts free themselves in __del__ after the EGL display
    # is gone and print tracebacks; the process's memory and contexts go with it anyway.
    os._exit(0)


if __name__ == "__main__":
    main()
