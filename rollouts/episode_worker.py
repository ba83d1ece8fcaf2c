"""The process side of the rollout runner: builds envs lazily and executes action chunks.

Runs in a spawned process and imports neither torch nor any simulator itself; the env factory
(`"module:function"` or a picklable callable) imports what it needs, inside this process.

Protocol (one request, one reply, over the duplex pipe of an envs.processes.EnvProcess):
  ("reset", episode: dict)  -> ("obs", reply) | ("error", reply)
  ("act", actions [n, Da])  -> ("obs", reply) | ("error", reply)
The runner closing its end of the pipe ends the process (quietly, once the request in hand is done).
reply = {"obs": {key: [To, ...]} (absent once done), "steps", "return", "success", "done", "video"}.
An error reply carries "message" and "build" (True when the env could not even be constructed, or
lacks an observation the policy needs: errors every episode would repeat).
Executing a whole chunk here, not one step per message, is what the receding horizon allows:
the policy is not consulted between the actions of a chunk, so the pipe is crossed once per chunk.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

DEFAULT_ENV_FACTORY = "envs.factory:make_env"


def resolve_factory(factory: str | Callable[..., Any]) -> Callable[..., Any]:
    """The callable behind `"package.module:function"` (or the callable itself)."""
    if callable(factory):
        return factory
    module_name, sep, attr = str(factory).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"env factory must look like 'package.module:function', got {factory!r}")
    fn = getattr(importlib.import_module(module_name), attr, None)
    if not callable(fn):
        raise ValueError(f"env factory {factory!r}: {module_name} has no callable {attr!r}")
    return fn


def describe_error(err: BaseException) -> str:
    """`Type: message (at file.py:line in function)`, the innermost frame being where it was raised."""
    where = ""
    tb = traceback.extract_tb(err.__traceback__)
    if tb:
        frame = tb[-1]
        where = f" (at {os.path.basename(frame.filename)}:{frame.lineno} in {frame.name})"
    return f"{type(err).__name__}: {err}{where}"


class _Episode:
    def __init__(self, env: Any, cfg: dict[str, Any]) -> None:
        self.env = env
        self.cfg = cfg
        self.history: deque[dict[str, np.ndarray]] = deque(maxlen=int(cfg["n_obs_steps"]))
        self.steps = 0
        self.ret = 0.0
        self.success = False
        self.done = False
        self.frames: list[np.ndarray] | None = [] if cfg.get("video") else None
        self.video_path: str | None = None
        self.cpu_s = 0.0  # this process's CPU time spent on the episode (load-independent cost)

    def record(self, raw_obs: dict[str, Any]) -> None:
        if self.frames is None:
            return
        source = self.cfg["video"]["source"]
        if source == "render":
            frame = self.env.render(**self.cfg["video"].get("render_kwargs", {}))
        else:
            frame = raw_obs[source]  # a camera observation, e.g. "agentview_image"
        self.frames.append(np.asarray(frame, dtype=np.uint8))

    def stacked(self) -> dict[str, np.ndarray]:
        return {k: np.stack([o[k] for o in self.history]) for k in self.history[0]}

    def reply(self) -> dict[str, Any]:
        out = {"steps": self.steps, "return": self.ret, "success": self.success, "done": self.done,
               "video": self.video_path, "cpu_s": self.cpu_s}
        if not self.done:
            out["obs"] = self.stacked()
        return out

    def write_video(self, outcome: str) -> None:
        if not self.frames:
            return
        from rollouts.video import video_filename, write_video

        video = self.cfg["video"]
        name = video_filename(self.cfg["episode"], self.cfg["task_name"], outcome)
        path = os.path.join(video["dir"], name)
        write_video(path, self.frames, fps=video["fps"])
        self.video_path = path
        self.frames = None


class ObsMismatch(KeyError):
    """The env does not produce an observation the policy needs (a config error, not bad luck)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _obs_dict(obs: Any, keys: list[str] | None) -> dict[str, np.ndarray]:
    if not isinstance(obs, dict):
        raise TypeError(f"env observations must be a dict of arrays, got {type(obs).__name__}")
    if keys is None:
        return {k: np.asarray(v) for k, v in obs.items()}
    missing = [k for k in keys if k not in obs]
    if missing:
        raise ObsMismatch(f"the env gives no observation {missing} that the policy needs; "
                          f"it gives {sorted(obs)}")
    return {k: np.asarray(obs[k]) for k in keys}


def _start(env: Any, cfg: dict[str, Any]) -> _Episode:
    ep = _Episode(env, cfg)
    if cfg.get("task_episode") is None:
        raw, _ = env.reset(seed=int(cfg["seed"]))
    else:  # gymnasium's reset options; envs without fixed start states ignore it
        raw, _ = env.reset(seed=int(cfg["seed"]), options={"task_episode": int(cfg["task_episode"])})
    obs = _obs_dict(raw, cfg.get("obs_keys"))
    for _ in range(ep.history.maxlen or 1):  # pad the start by repeating the first observation
        ep.history.append(obs)
    ep.record(raw)
    return ep


def _act(ep: _Episode, actions: np.ndarray) -> None:
    for action in actions:
        raw, reward, terminated, truncated, info = ep.env.step(action)
        obs = _obs_dict(raw, ep.cfg.get("obs_keys"))
        ep.steps += 1
        ep.ret += float(reward)
        succeeded = bool(info.get("success", False))
        ep.success = ep.success or succeeded
        ep.history.append(obs)
        ep.record(raw)
        if succeeded and not ep.cfg["stop_on_success"]:
            terminated = False  # our envs terminate on success; the caller asked to keep going
        stop = ep.success and ep.cfg["stop_on_success"]
        if stop or terminated or truncated or ep.steps >= ep.cfg["max_steps"]:
            ep.done = True
            break
    if ep.done:
        ep.write_video("success" if ep.success else "failure")


def _close_env(env: Any) -> None:
    try:
        env.close()
    except Exception:  # an env that just raised may fail to close too; it is dropped either way
        pass


def worker_main(conn, factory_ref: str | Callable[..., Any], factory_kwargs: dict[str, Any]) -> None:
    """Serve requests until the runner closes the pipe (EOF ends the process, see envs/processes.py)."""
    server = _Server(factory_ref, factory_kwargs)
    try:
        while True:
            request = conn.recv()
            conn.send(server.handle(request))  # outside handle(): a closed pipe is no episode error
    finally:
        server.close()


class _Server:
    """The worker's env (built lazily for the task of the episode at hand; one at a time) and the episode in
    flight."""

    def __init__(self, factory_ref: str | Callable[..., Any], factory_kwargs: dict[str, Any]) -> None:
        self.factory_ref, self.factory_kwargs = factory_ref, factory_kwargs
        self.factory: Callable[..., Any] | None = None
        self.envs: dict[int, Any] = {}
        self.ep: _Episode | None = None

    def handle(self, msg: tuple) -> tuple[str, dict[str, Any]]:
        building = False
        cpu0 = time.process_time()
        try:
            if msg[0] == "reset":
                self.ep = None
                building = int(msg[1]["task"]) not in self.envs
                env = self._env(msg[1])
                building = False
                self.ep = _start(env, msg[1])
            elif msg[0] == "act":
                if self.ep is None or self.ep.done:
                    raise RuntimeError("'act' without a running episode")
                _act(self.ep, np.asarray(msg[1]))
            else:
                raise ValueError(f"unknown request {msg[0]!r}")
            self.ep.cpu_s += time.process_time() - cpu0
            return "obs", self.ep.reply()
        except Exception as err:
            return "error", self._failed(err, msg, building)

    def _env(self, episode: dict[str, Any]) -> Any:
        task = int(episode["task"])
        if task not in self.envs:
            # One env per worker: the runner hands out episodes task by task (Plan.dispatch_order), so the
            # previous task's env is done with; kept, ten LIBERO envs of about 1 GB each per worker ran the
            # machine out of memory.
            for other in list(self.envs):
                _close_env(self.envs.pop(other))
            if self.factory is None:
                self.factory = resolve_factory(self.factory_ref)
            self.envs[task] = self.factory(episode["env_spec"], **self.factory_kwargs)
        return self.envs[task]

    def _failed(self, err: Exception, msg: tuple, building: bool) -> dict[str, Any]:
        fatal = building or isinstance(err, ObsMismatch)  # every later episode would fail alike
        reply = {"message": describe_error(err), "build": fatal, "steps": 0, "return": 0.0, "success": False,
                 "video": None}
        ep, self.ep = self.ep, None
        if ep is not None:
            reply["steps"], reply["return"] = ep.steps, ep.ret
            try:  # keep what was filmed: an errored episode is worth looking at
                ep.write_video("error")
                reply["video"] = ep.video_path
            except Exception as video_err:
                print(f"rollout worker: no error video: {video_err}", file=sys.stderr)
            # The env may be in any state after raising: rebuild it for the next episode.
            self.envs.pop(int(ep.cfg["task"]), None)
            _close_env(ep.env)
        elif msg[0] == "reset" and not building:  # reset itself raised
            bad = self.envs.pop(int(msg[1]["task"]), None)
            if bad is not None:
                _close_env(bad)
        return reply

    def close(self) -> None:
        for env in self.envs.values():
            _close_env(env)
