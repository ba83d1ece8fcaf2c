"""Writing training checkpoints: every save lands whole or stops the run with one line.

Lightning's own atomic save swallows a PermissionError (an unwritable checkpoints/ went unnoticed until
the end of a run, which then had no checkpoint at all). CheckedCheckpointIO replaces it for every save a
run makes (ModelCheckpoint's top-k and last.ckpt, the periodic and interrupt saves): the checkpoint is
serialised in memory, the free disk is checked against its size, it is written to a hidden file beside
the target, synced, and renamed over the target. Any failure removes the hidden file, leaves the previous
checkpoint as it was, and raises CheckpointWriteError naming the path and the error.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

__all__ = ["CheckedCheckpointIO", "CheckpointWriteError", "write_checkpoint_file", "DISK_RESERVE_BYTES"]

DISK_RESERVE_BYTES = 64 << 20  # left free after a save: logs and the OS need room too


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written; the run stops at once (the previous checkpoint is kept)."""


def write_checkpoint_file(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Serialise, check the disk, write beside `path`, sync, rename: `path` is the old or the new file."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    data = buffer.getbuffer()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
        if free < len(data) + DISK_RESERVE_BYTES:
            raise CheckpointWriteError(
                f"cannot write checkpoint {path}: it needs {len(data) / 2**20:.0f} MB (+{DISK_RESERVE_BYTES >> 20} "
                f"MB reserve) and {free / 2**20:.0f} MB are free; free some disk, then resume")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except CheckpointWriteError:
        raise
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise CheckpointWriteError(f"cannot write checkpoint {path}: {err.strerror or err}; the run stopped "
                                   "(the previous checkpoint is kept); fix the directory, then resume") from None


class CheckedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with checked, atomic writes (reading is Lightning's)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        write_checkpoint_file(checkpoint, path)
