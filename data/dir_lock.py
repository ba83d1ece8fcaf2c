"""One writer at a time for a directory (a run directory, a demo store): a lock file naming its holder.

    with DirLock(run_dir / ".lock", what="run directory") as lock:   # LockError (one line) when taken
        ...

The lock file holds {"pid", "host", "started", "command"}. It is created with O_EXCL, so of two processes
starting together exactly one wins. A lock left by a process that no longer runs on this host (killed
with -9, a crash before the release) is stale and taken over; a lock of another host cannot be checked
from here, so it is refused with the file to remove once that run is known to be over.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any


class LockError(ValueError):
    """The directory is held by another live process: one line naming it and its holder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():  # a zombie has exited: its lock is stale
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return True
    return True


def read_holder(path: Path) -> dict[str, Any] | None:
    """The lock file's holder, or None when there is no (readable) lock."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def holder_is_live(holder: dict[str, Any]) -> bool:
    """True unless the holder is known to be gone (a dead pid on this host)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    return isinstance(pid, int) and pid != os.getpid() and _alive(pid)


def describe(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"


class DirLock:
    """Claim `path` (a lock file) for this process; `release()` (or leaving the `with`) gives it back."""

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path, self.what, self.held = Path(path), what, False

    def acquire(self) -> DirLock:
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv)}
        for _ in range(3):  # a stale lock is removed and the claim tried again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_holder(self.path)
                if holder is not None and holder_is_live(holder):
                    other = " (another host: remove the file once that run is over)" \
                        if holder.get("host") != socket.gethostname() else ""
                    raise LockError(f"{self.path.parent} is in use by another process ({describe(holder)}; "
                                    f"lock {self.path}){other}; wait for it or choose another {self.what}") \
                        from None
                if holder is None and time.time() - self._mtime() < 5:
                    time.sleep(0.2)  # being written by a process that has just claimed it
                    continue
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except OSError as err:
                raise LockError(f"cannot claim the {self.what} {self.path.parent}: {err.strerror} "
                                f"({self.path})") from None
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            self.held = True
            return self
        raise LockError(f"{self.path.parent} is being claimed by another process (lock {self.path}); try again")

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def release(self) -> None:
        if self.held:
            holder = read_holder(self.path)
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> DirLock:
        return self.acquire() if not self.held else self

    def __exit__(self, *exc: object) -> None:
        self.release()
