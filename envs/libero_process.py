"""The LIBERO simulator process, seen from the framework: started under .venv-libero's interpreter,
spoken to in the format of envs/libero_wire.py (envs/libero_server.py is the other side).

Nothing of LIBERO or robosuite 1.4 is imported here: the main environment has robosuite 1.5.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import numpy as np

from envs.libero_wire import read_message, write_message

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBERO_PYTHON_VAR = "LIBERO_PYTHON"  # a user's own LIBERO interpreter, instead of the repo's .venv-libero
INSTALL_HINT = "make libero-env"
CLOSE_TIMEOUT_S = 5.0


class LiberoUnavailable(RuntimeError):
    """The LIBERO environment is not installed (one line naming the command that installs it)."""


class LiberoProcessError(RuntimeError):
    """The LIBERO process answered with an error, or died."""


def libero_python() -> str:
    """The interpreter of the LIBERO environment; LiberoUnavailable when there is none."""
    path = os.environ.get(LIBERO_PYTHON_VAR) or os.path.join(REPO_ROOT, ".venv-libero", "bin", "python")
    if not os.access(path, os.X_OK):
        raise LiberoUnavailable(f"the LIBERO simulator lives in its own Python environment, not installed here "
                                f"({path} is missing): run `{INSTALL_HINT}` in {REPO_ROOT}")
    return path


def libero_available() -> bool:
    try:
        libero_python()
        return True
    except LiberoUnavailable:
        return False


class LiberoProcess:
    """One envs/libero_server.py process; `request(cmd, arrays, **fields)` -> (reply header, arrays)."""

    def __init__(self) -> None:
        python = libero_python()
        env = dict(os.environ)
        # Only this repository on the path: the child must import envs/libero_server.py and nothing else of ours.
        env["PYTHONPATH"] = REPO_ROOT
        env.pop("PYTHONHOME", None)
        # A session of its own: a terminal's Ctrl-C reaches the process group of the parent, which closes this
        # process (as every env worker's parent does); it never lands in the simulator half-way through a step.
        # A parent that dies outright takes it along (parent-death signal, set by the server).
        self.proc = subprocess.Popen([python, "-s", "-m", "envs.libero_server"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd=REPO_ROOT, start_new_session=True)

    def request(self, cmd: str, arrays: dict[str, np.ndarray] | None = None,
                **fields: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if self.proc.poll() is not None:
            raise LiberoProcessError(f"the LIBERO simulator process has ended ({self._how_it_ended()})")
        try:
            write_message(self.proc.stdin, {"cmd": cmd, **fields}, arrays)
            header, out = read_message(self.proc.stdout)
        except (EOFError, BrokenPipeError, OSError):
            raise LiberoProcessError(f"the LIBERO simulator process died during {cmd!r} "
                                     f"({self._how_it_ended()})") from None
        if "error" in header:
            raise LiberoProcessError(f"LIBERO {cmd}: {header['error']}")
        return header, out

    def _how_it_ended(self) -> str:
        try:
            code = self.proc.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                write_message(self.proc.stdin, {"cmd": "close"})
                read_message(self.proc.stdout)  # its goodbye: the process has closed its env
            except (EOFError, OSError):
                pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __del__(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
