"""The thread setting of every process the framework starts: one owner, applied once per process.

On a shared machine PyTorch's default (one OpenMP thread per core, spinning while it waits) collapses:
with another job on the two cores a training step ran 7x slower (benchmarks/thread_settings.py: 0.38 vs
2.72 steps/s), and a 50-episode Lift evaluation took 272 s instead of 15 s, its policy threads spinning
against its own env workers. So every entry point (train.py, eval_rollouts.py, python -m data.generate,
python -m data.convert, python -m benchmarks.suite, serve.py) calls, before torch is imported:

    from envs.threads import prepare_process
    prepare_process()          # waiting threads sleep (OMP_WAIT_POLICY=PASSIVE) unless the user chose

and sizes torch's pool once it knows its setting (train.py: `threads`, conf/config.yaml):

    from envs.threads import use_threads
    use_threads("auto")        # or a number; OMP_NUM_THREADS, when the user set it, wins

`auto` takes the cores that are free when the process starts, at least one. The rollout parent
(rollouts/runner.py, so eval_rollouts.py and evaluation during training alike) shrinks the pool while its
env workers run (`threads_beside_workers`): each worker steps its physics on a core of its own,
concurrently with the policy. The variables the user set are never
overridden; env workers stay single-threaded (envs/processes.py WORKER_THREAD_VARS).
This module imports nothing but the standard library at import time (it runs before torch loads).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator

# What prepare_process decided, for the process to report (and tests to read back).
SETTINGS: dict[str, object] = {}


def prepare_process() -> dict[str, object]:
    """Once per process, before torch starts OpenMP: passive waiting unless OMP_WAIT_POLICY is set.
    A second call changes nothing. Returns the settings."""
    if SETTINGS.get("prepared"):
        return SETTINGS
    if "torch" in sys.modules:  # OpenMP may have read its environment already: the setting would be a lie
        torch_loaded = True
    else:
        torch_loaded = False
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    SETTINGS.update(prepared=True, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                    torch_loaded_before=torch_loaded)
    return SETTINGS


def free_cores() -> int:
    """Cores not taken by other runnable processes: cpu_count - (procs_running - 1), the median of 9 looks
    at /proc/stat over ~0.2 s (the load average lags by a minute). At least 1; all cores where /proc is absent."""
    n = os.cpu_count() or 1
    try:
        seen = []
        for _ in range(9):
            with open("/proc/stat") as f:
                running = next(int(line.split()[1]) for line in f if line.startswith("procs_running"))
            seen.append(running - 1)  # this process is running while it looks
            time.sleep(0.025)
    except (OSError, StopIteration, ValueError):
        return n
    return max(1, n - int(statistics.median(seen)))


def user_threads() -> int | None:
    """OMP_NUM_THREADS when the user set it to a positive number, else None."""
    user = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(user) if user.isdigit() and int(user) > 0 else None


def thread_count(setting: int | str = "auto", reserve: int = 0) -> int:
    """`threads`: a positive number, or `auto` (OMP_NUM_THREADS when the user set it, else the free cores
    less `reserve`, at least 1)."""
    if setting == "auto":
        user = user_threads()
        return user if user is not None else max(1, free_cores() - max(0, reserve))
    return int(setting)


def use_threads(setting: int | str = "auto", reserve: int = 0) -> int:
    """Size torch's intra-op pool (thread_count) and record it in SETTINGS; returns the number."""
    import torch

    prepare_process()
    n = thread_count(setting, reserve)
    torch.set_num_threads(n)
    SETTINGS.update(threads=n, reserve=reserve)
    return n


@contextlib.contextmanager
def threads_beside_workers(workers: int) -> Iterator[int]:
    """While `workers` env processes step beside this one (the rollout parent): torch's pool shrunk to the
    free cores less the workers, never grown; OMP_NUM_THREADS, when the user set it, is kept. Restored after."""
    import torch

    before = torch.get_num_threads()
    n = before if user_threads() is not None else min(before, thread_count("auto", reserve=workers))
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
