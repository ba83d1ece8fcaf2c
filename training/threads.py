"""How many threads a training step uses (the `threads` knob of conf/config.yaml).

On a shared machine PyTorch's default (one thread per core, spinning while it waits) collapses: with
another job on the two cores a step ran 7x slower (benchmarks/thread_settings.py: 0.38 vs 2.72 steps/s).
train.py sets OMP_WAIT_POLICY=PASSIVE before torch starts OpenMP, so idle threads sleep, and `auto`
takes the cores that are free when the run starts; that setting was within 10% of the best fixed one
under every load measured.
"""

from __future__ import annotations

import os
import statistics
import time


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


def training_threads(setting: int | str) -> int:
    """`threads`: a positive number, or `auto` (OMP_NUM_THREADS when the user set it, else the free cores)."""
    if setting == "auto":
        user = os.environ.get("OMP_NUM_THREADS", "")
        return int(user) if user.isdigit() and int(user) > 0 else free_cores()
    return int(setting)
