"""The parent's side of a rollout worker: spawning it (lean and single-threaded), talking to it, and
telling a crash or a hang from a reply. The process side is rollouts/episode_worker.py.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

from rollouts.episode_worker import worker_main

# Env workers do single-threaded physics; idle BLAS thread pools in each of them spin and steal CPU.
WORKER_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def main_module_hidden(factory: str | Callable[..., Any]) -> Iterator[None]:
    """Start spawned workers without re-importing the parent's __main__ script.

    A spawned child normally re-runs the main script's imports (here torch, Hydra, ...: seconds
    and hundreds of MB per worker) and, in a script without an `if __name__ == "__main__"`
    guard, the whole script. The worker needs none of it, unless the factory lives in __main__.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(factory, "__module__", None) == "__main__":
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class WorkerHandle:
    """One spawned env process and this side of its pipe; its deadline catches a hung simulator."""

    def __init__(self, ctx: Any, factory: str | Callable[..., Any], factory_kwargs: dict[str, Any]) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        saved = {k: os.environ.get(k) for k in WORKER_THREAD_VARS}
        for k in WORKER_THREAD_VARS:
            os.environ.setdefault(k, "1")
        try:
            self.proc = ctx.Process(target=worker_main, args=(child, factory, factory_kwargs), daemon=True)
            with main_module_hidden(factory):
                self.proc.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
        child.close()  # so that the parent sees EOF when the worker dies
        self.episode: Any = None  # the runner's record of the episode in flight (None: idle)
        self.deadline = float("inf")
        self.has_replied = False  # False until the worker answers once (i.e. it could build an env)

    def send(self, msg: tuple, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        try:
            self.conn.send(msg)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            pass  # the worker is gone; poll() reports it

    def poll(self, timeout_s: float) -> tuple[str, dict[str, Any]] | None:
        """The worker's reply if there is one, ("crash", {"message"}) if it died or overran its
        deadline, else None (still working)."""
        if self.conn.poll():
            try:
                reply = self.conn.recv()
                self.has_replied = True
                return reply
            except (EOFError, ConnectionResetError, OSError):
                pass
        elif self.proc.is_alive():
            if time.monotonic() < self.deadline:
                return None
            self.kill()
            return "crash", {"message": f"worker timed out: no reply within {timeout_s:g} s"}
        self.proc.join(timeout=5)
        code = self.proc.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        return "crash", {"message": f"worker process {how} during the episode"}

    def close(self, timeout_s: float = 10.0) -> None:
        if self.proc.is_alive():
            self.send(("close",), timeout_s)
            self.proc.join(timeout_s)
        self.kill()
        self.conn.close()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
