"""Helpers every reader shares: the conversion options, key renames, frame resizing.

Options a reader accepts (keyword arguments, all optional; `None` means "not asked for"):
    obs_keys      low-dim observation keys to keep (source or store names); None keeps all
    cameras       cameras to keep, by camera name ("agentview"); None keeps all, [] keeps none
    obs_map       {source key: store key} renames, applied after the format's own renames
    image_size    resize frames to image_size x image_size; None keeps the source size
    max_episodes  convert at most this many episodes
    filter        a subset by name (robomimic mask/<filter>); readers without subsets reject it
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from data.convert.source import ConvertError

OPTION_NAMES = ("obs_keys", "cameras", "obs_map", "image_size", "max_episodes", "filter")


def parse_list(text: str) -> list[str]:
    """'a,b' or '[a,b]' -> ['a', 'b'] ('' and '[]' -> [])."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [p.strip().strip("'\"") for p in text.split(",") if p.strip()]


def parse_obs_map(text: str) -> dict[str, str]:
    """'src:dst,src2:dst2' -> {src: dst, src2: dst2}."""
    out: dict[str, str] = {}
    for item in parse_list(text):
        src, sep, dst = item.partition(":")
        if not sep or not src.strip() or not dst.strip():
            raise ConvertError(f"obs_map entries are source:store pairs, got {item!r} "
                               "(e.g. obs_map=agentview_rgb:agentview_image)")
        if src.strip() in out:
            raise ConvertError(f"obs_map renames {src.strip()!r} twice")
        out[src.strip()] = dst.strip()
    return out


def check_renames(renames: Mapping[str, str], where: str) -> None:
    """Two source keys renamed onto one store key would silently overwrite each other."""
    seen: dict[str, str] = {}
    for src, dst in renames.items():
        if dst in seen:
            raise ConvertError(f"{where}: keys {seen[dst]!r} and {src!r} would both become {dst!r}; "
                               "change obs_map or drop one with obs_keys")
        seen[dst] = src


def resize_frames(frames: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [T, size, size, 3] (antialiased bilinear); unchanged when already that size."""
    if size is None or frames.shape[1:3] == (size, size):
        return frames
    from PIL import Image

    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BILINEAR))
    return out


def pick(available: Iterable[str], wanted: Iterable[str] | None, what: str, where: str) -> list[str]:
    """The `wanted` entries of `available` (all when wanted is None); a missing one is an error."""
    available = list(available)
    if wanted is None:
        return available
    wanted = list(wanted)
    missing = [w for w in wanted if w not in available]
    if missing:
        raise ConvertError(f"{where} has no {what} {missing}; it has {available or 'none'}")
    return wanted


def check_positive(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value <= 0):
        raise ConvertError(f"{name} must be a positive integer, got {value!r}")
