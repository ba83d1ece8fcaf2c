"""Worker functions for tests/envs/test_processes.py (importable by the spawned children)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from typing import Any

PR_GET_PDEATHSIG = 2


def report(conn: Any) -> None:
    """Send how this worker was started: thread variables, SIGINT handling, parent-death signal, __main__."""
    sig = ctypes.c_int(0)
    ctypes.CDLL(None).prctl(PR_GET_PDEATHSIG, ctypes.byref(sig))
    main = sys.modules["__main__"]
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    conn.send({"threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
               "sigint_ignored": signal.getsignal(signal.SIGINT) is signal.SIG_IGN, "sigint_blocked": blocked,
               "pdeathsig": sig.value, "main_file": getattr(main, "__file__", None)})
    conn.recv()  # until the parent closes the pipe: EOF ends the worker quietly


def square(x: Any) -> int:
    """A job for map_in_processes: later items finish first (so the order must be restored)."""
    if x == "boom":
        raise ValueError("boom in a job")
    if x == "die":
        os._exit(7)
    if x == "hang":
        time.sleep(120)
    time.sleep(0.05 * (3 - x % 4))
    return x * x
