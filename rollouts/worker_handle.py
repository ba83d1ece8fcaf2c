"""The runner's side of a rollout worker: an env process started like every env worker
(envs/processes.py), the episode it runs, and a deadline that tells a hang from a reply.
The process side is rollouts/episode_worker.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from envs.processes import EnvProcess
from rollouts.episode_worker import worker_main


class WorkerHandle:
    """One spawned env process; its deadline catches a hung simulator."""

    def __init__(self, factory: str | Callable[..., Any], factory_kwargs: dict[str, Any]) -> None:
        self.process = EnvProcess(worker_main, (factory, factory_kwargs), uses=factory)
        self.conn = self.process.conn
        self.episode: Any = None  # the runner's record of the episode in flight (None: idle)
        self.deadline = float("inf")
        self.has_replied = False  # False until the worker answers once (i.e. it could build an env)

    @property
    def sentinel(self) -> int:
        return self.process.sentinel

    def send(self, msg: tuple, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.process.send(msg)  # a worker that is gone is reported by poll()

    def poll(self, timeout_s: float) -> tuple[str, dict[str, Any]] | None:
        """The worker's reply if there is one, ("crash", {"message"}) if it died or overran its
        deadline, else None (still working)."""
        got = self.process.poll()
        if got is None:
            if time.monotonic() < self.deadline:
                return None
            self.process.kill()
            return "crash", {"message": f"worker timed out: no reply within {timeout_s:g} s"}
        answered, reply = got
        if not answered:
            return "crash", {"message": f"worker process {reply} during the episode"}
        self.has_replied = True
        return reply

    def close(self, timeout_s: float = 10.0) -> None:
        self.process.close(timeout_s)
