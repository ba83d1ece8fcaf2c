"""MuJoCo's warnings go to Python logging, never to MUJOCO_LOG.TXT in the working directory.

Left alone, MuJoCo's C library prints each warning ("Nan, Inf or huge value in QACC...") and appends it to
MUJOCO_LOG.TXT in whatever directory the process was started from (a user's checkout, say). Installing a
handler replaces both: each distinct warning is logged once per process (a diverging simulation warns
every step), under the logger `mujoco`.
"""

from __future__ import annotations

import logging

log = logging.getLogger("mujoco")
_seen: set[str] = set()


def _warn(message: str) -> None:
    key = message.split(" Time =")[0]  # the same warning at a later time is the same warning
    if key not in _seen:
        _seen.add(key)
        log.warning("mujoco: %s", message.strip())


def route_mujoco_warnings() -> None:
    """Install the handler (idempotent); call before the first simulation step of a process."""
    import mujoco

    if mujoco.get_mju_user_warning() is not _warn:
        mujoco.set_mju_user_warning(_warn)
