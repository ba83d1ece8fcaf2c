"""Importable by spawned workers in tests/envs/test_libero_workers.py."""

from __future__ import annotations

import os
import signal
from typing import Any

from envs.libero_env import LiberoEnv
from envs.libero_process import LiberoProcess
from envs.spec import EnvSpec

CRASH_AT_STEP = 3
_crashed = False  # per worker process: only the first episode's simulator is killed


class CrashOnceEnv(LiberoEnv):
    """A LiberoEnv whose simulator process is killed outright at step CRASH_AT_STEP of its first episode."""

    def step(self, action):
        global _crashed
        if not _crashed and self._t == CRASH_AT_STEP:
            _crashed = True
            os.kill(self._proc.proc.pid, signal.SIGKILL)
        return super().step(action)


def make_crash_once_env(spec: dict[str, Any]) -> CrashOnceEnv:
    return CrashOnceEnv(EnvSpec.from_dict(spec))


def hold_libero_process(conn: Any) -> None:
    """Start a LIBERO process, send its pid, and wait until the parent closes the pipe."""
    p = LiberoProcess()
    conn.send(p.proc.pid)
    conn.recv()
