"""The commands a suite runs: each a child process from the repo root with its output in a log file, and
how an interrupt reaches it (so train.py can save last.ckpt before it stops); how paths and commands are
shown in logs and results."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.suite.records import REPO

LIVE: set[subprocess.Popen] = set()  # the child running now, so that a SIGTERM to the suite reaches it
STOP_TIMEOUT_S = 300  # how long an interrupted child may take to save its state (train.py: last.ckpt)


def run_subprocess(argv: list[str], log_path: Path) -> int:
    """Run from the repo root (train.py and eval_rollouts.py resolve conf/ and imports from there); the
    output goes to `log_path`, appended, so a resumed training keeps its whole log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        LIVE.add(proc)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the child too (same process group), a SIGTERM is passed on (terminate_children):
            # either way it saves and exits; killing it at once, as subprocess.run would, could lose the save.
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        finally:
            LIVE.discard(proc)


def terminate_children(signum: int, frame: Any) -> None:
    """SIGTERM handler of the suite: pass it on to the running command, then stop like Ctrl-C."""
    for proc in list(LIVE):
        proc.terminate()
    raise KeyboardInterrupt


def shown(path: Path) -> str:
    """A path as a command line shows it: relative to the repo root (the cwd) when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def display(argv: list[str]) -> str:
    return shlex.join(["python", *argv[1:]])


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
