"""Episode videos: mp4 (H.264 through imageio-ffmpeg) named by episode, task and outcome."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

OUTCOMES = ("success", "failure", "error")


class VideoDirError(OSError):
    pass


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove a file can be written there; raise VideoDirError if not.

    Called before any rollout so that an unwritable directory fails in a second, not after the
    whole evaluation has run.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise VideoDirError(
            f"cannot write videos to {str(path)!r} ({err.strerror or err}); choose a writable directory "
            "(eval: out=DIR) or turn videos off (video.n=0)"
        ) from err
    return path


def video_filename(episode: int, task: str, outcome: str) -> str:
    """e.g. `ep0003_lift_success.mp4`; task names are reduced to filename-safe characters."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", task).strip("-").lower() or "task"
    return f"ep{episode:04d}_{safe}_{outcome}.mp4"


def _even(frame: np.ndarray) -> np.ndarray:
    # H.264 in yuv420p needs even width and height; pad with the edge rather than resize.
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frame


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float = 20.0) -> Path:
    """Write RGB uint8 frames [H, W, 3] (all the same size) to an mp4 file; return its path."""
    import imageio.v2 as imageio

    if len(frames) == 0:
        raise ValueError("no frames to write")
    path = Path(path)
    first = np.asarray(frames[0])
    if first.ndim != 3 or first.shape[2] != 3:
        raise ValueError(f"frames must be RGB [H, W, 3], got shape {first.shape}")
    writer = imageio.get_writer(
        path, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1, quality=7,
        ffmpeg_log_level="error",
    )
    try:
        for frame in frames:
            frame = np.asarray(frame)
            if frame.shape != first.shape:
                raise ValueError(f"all frames must have one shape; got {frame.shape} after {first.shape}")
            writer.append_data(_even(frame.astype(np.uint8, copy=False)))
    finally:
        writer.close()
    return path
