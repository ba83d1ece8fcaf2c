"""The demo store: demonstrations in one zarr v3 directory (diffusion_policy's ReplayBuffer layout, extended).

    <path>/data/<key>            every episode concatenated along axis 0
    <path>/meta/episode_ends     int64 cumulative ends: episode i is rows [ends[i-1], ends[i])
    <path>/meta/episode_task     int64 task index per episode (into the `tasks` attribute)
    <path>/meta/episode_seed     int64 env seed per episode (-1: unknown)
    <path>/meta/episode_success  bool  did the demonstrator succeed
    attributes: format, format_version, tasks [{name, instruction, env_spec}], action_space

Appending is atomic by ordering: data rows and per-episode metadata are written first and
`episode_ends` last, so readers only ever see complete episodes. Rows past the last end
(left by a crash mid-append) are invisible and trimmed when the store is reopened for append.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

FORMAT = "mode-il-demo-store"
FORMAT_VERSION = 1
_META_KEYS = {"episode_task": np.int64, "episode_seed": np.int64, "episode_success": np.bool_}
IMAGE_FRAMES_PER_CHUNK = 4
LOWDIM_ROWS_PER_CHUNK = 2048


class StoreError(ValueError):
    """A demo store that cannot be used as asked; the message says what to do."""


def _compressor(image: bool) -> BloscCodec:
    # zstd for everything; bit-shuffling helps float columns, byte-shuffling is better for pixels.
    shuffle = BloscShuffle.shuffle if image else BloscShuffle.bitshuffle
    return BloscCodec(cname="zstd", clevel=3, shuffle=shuffle)


def is_image_key(key: str, value: np.ndarray) -> bool:
    return value.dtype == np.uint8 and value.ndim == 4 and value.shape[-1] == 3


class DemoStore:
    """Read and append demonstrations. Build with `DemoStore.create` or `DemoStore.open`."""

    def __init__(self, root: zarr.Group, path: str, writable: bool) -> None:
        self._root = root
        self.path = path
        self.writable = writable
        self._ends = np.asarray(root["meta/episode_ends"][:], dtype=np.int64)

    # --- construction ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        tasks: Sequence[Mapping[str, Any]],
        action_space: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> DemoStore:
        path = os.fspath(path)
        if os.path.exists(path) and not overwrite:
            raise StoreError(f"{path!r} already exists; open it with DemoStore.open(path, 'a') or pass overwrite")
        if not tasks:
            raise StoreError("a store needs at least one task ({name, instruction, env_spec})")
        for t in tasks:
            missing = {"name", "instruction"} - set(t)
            if missing:
                raise StoreError(f"task entry {dict(t)} lacks {sorted(missing)}")
        root = zarr.open_group(path, mode="w" if overwrite else "w-", zarr_format=3)
        root.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "tasks": [dict(t) for t in tasks],
                "action_space": dict(action_space or {}),
            }
        )
        root.create_group("data")
        meta = root.create_group("meta")
        for key, dtype in {"episode_ends": np.int64, **_META_KEYS}.items():
            meta.create_array(key, shape=(0,), chunks=(4096,), dtype=dtype)
        return cls(root, path, writable=True)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> DemoStore:
        path = os.fspath(path)
        if mode not in ("r", "a"):
            raise StoreError(f"mode must be 'r' (read) or 'a' (append), got {mode!r}")
        if not Path(path, "zarr.json").is_file():
            raise StoreError(
                f"{path!r} is not a demo store (no zarr group there). Generate one with "
                "`python -m data.generate task=lift out=PATH` or convert a dataset into it."
            )
        try:
            root = zarr.open_group(path, mode="r" if mode == "r" else "r+", zarr_format=3)
        except Exception as err:
            raise StoreError(f"{path!r} could not be opened as a zarr v3 group: {err}") from err
        if root.attrs.get("format") != FORMAT:
            raise StoreError(f"{path!r} is a zarr group but not a demo store (format attribute missing)")
        version = int(root.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise StoreError(
                f"{path!r} has store format version {version}, newer than this framework's "
                f"{FORMAT_VERSION}; upgrade the framework to read it"
            )
        if "meta/episode_ends" not in root:
            raise StoreError(f"{path!r} lacks meta/episode_ends: the store is corrupt; regenerate it")
        store = cls(root, path, writable=(mode == "a"))
        if mode == "a":
            store._trim_uncommitted()
        return store

    # --- what is inside ----------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._root.attrs)

    @property
    def tasks(self) -> list[dict[str, Any]]:
        return list(self._root.attrs["tasks"])

    @property
    def action_space(self) -> dict[str, Any]:
        return dict(self._root.attrs.get("action_space", {}))

    @property
    def keys(self) -> list[str]:
        return sorted(self._root["data"].array_keys())

    @property
    def episode_ends(self) -> np.ndarray:
        return self._ends.copy()

    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    @property
    def n_steps(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self._ends, prepend=0)

    def _meta(self, key: str) -> np.ndarray:
        return np.asarray(self._root["meta"][key][: self.n_episodes])

    @property
    def episode_task(self) -> np.ndarray:
        return self._meta("episode_task")

    @property
    def episode_seed(self) -> np.ndarray:
        return self._meta("episode_seed")

    @property
    def episode_success(self) -> np.ndarray:
        return self._meta("episode_success")

    def array(self, key: str) -> zarr.Array:
        self.require_keys([key])
        return self._root["data"][key]

    def require_keys(self, keys: Sequence[str]) -> None:
        missing = [k for k in keys if k not in self._root["data"]]
        if missing:
            raise StoreError(f"store {self.path!r} has no key(s) {missing}; it has {self.keys}")

    def get_episode(self, i: int, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range: the store has {self.n_episodes}")
        i %= self.n_episodes
        start = int(self._ends[i - 1]) if i else 0
        end = int(self._ends[i])
        return {k: np.asarray(self.array(k)[start:end]) for k in (keys or self.keys)}

    def load(self, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every committed row of the given keys in memory (small zarr reads cost ms each)."""
        return {k: np.asarray(self.array(k)[: self.n_steps]) for k in (keys or self.keys)}

    # --- appending -----------------------------------------------------------------------
    def _validate(self, episode: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "action" not in episode:
            raise StoreError("an episode needs an 'action' array")
        arrays = {k: np.asarray(v) for k, v in episode.items()}
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise StoreError(f"ragged episode: all arrays need the same length, got {lengths}")
        if lengths["action"] == 0:
            raise StoreError("an episode needs at least one step")
        if not np.all(np.isfinite(arrays["action"])):
            raise StoreError("episode actions contain NaN or inf; fix the demonstrator or drop the episode")
        existing = self.keys
        if existing and sorted(arrays) != existing:
            raise StoreError(f"episode keys {sorted(arrays)} differ from the store's keys {existing}")
        out = {}
        for k, v in arrays.items():
            if is_image_key(k, v):
                out[k] = v
                continue
            if v.dtype == np.uint8:
                raise StoreError(f"uint8 key {k!r} must be images shaped [L, H, W, 3], got {v.shape}")
            out[k] = v.astype(np.float32) if v.dtype.kind == "f" else v
            if existing and self._root["data"][k].shape[1:] != v.shape[1:]:
                raise StoreError(f"key {k!r} has shape {v.shape[1:]} per step; the store has "
                                 f"{self._root['data'][k].shape[1:]}")
        return out

    def _create_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        data = self._root["data"]
        for k, v in arrays.items():
            image = is_image_key(k, v)
            rows = IMAGE_FRAMES_PER_CHUNK if image else LOWDIM_ROWS_PER_CHUNK
            data.create_array(
                k, shape=(0, *v.shape[1:]), chunks=(rows, *v.shape[1:]), dtype=v.dtype,
                compressors=[_compressor(image)],
            )

    def append_episode(
        self, episode: Mapping[str, np.ndarray], task: int = 0, seed: int | None = None, success: bool = True
    ) -> int:
        """Append one episode atomically; returns its index. A failure leaves the store as it was."""
        if not self.writable:
            raise StoreError(f"store {self.path!r} was opened read-only; open it with mode='a' to append")
        if not 0 <= task < len(self.tasks):
            raise StoreError(f"task index {task} out of range: the store has {len(self.tasks)} task(s)")
        arrays = self._validate(episode)
        if not self.keys:
            self._create_arrays(arrays)
        start, n = self.n_steps, self.n_episodes
        length = len(arrays["action"])
        try:
            for k, v in arrays.items():
                arr = self._root["data"][k]
                arr.resize((start + length, *arr.shape[1:]))
                arr[start:] = v
            meta = self._root["meta"]
            for key, value in (("episode_task", task), ("episode_seed", -1 if seed is None else seed),
                               ("episode_success", success)):
                meta[key].resize((n + 1,))
                meta[key][n] = value
            # The commit point: only now does the episode become visible.
            ends = meta["episode_ends"]
            ends.resize((n + 1,))
            ends[n] = start + length
        except BaseException:
            self._trim_uncommitted()
            raise
        self._ends = np.append(self._ends, start + length)
        return n

    def _trim_uncommitted(self) -> None:
        """Drop rows and metadata past the last committed episode end."""
        meta = self._root["meta"]
        ends = meta["episode_ends"]
        self._ends = np.asarray(ends[:], dtype=np.int64)
        n, steps = self.n_episodes, self.n_steps
        for key in _META_KEYS:
            if meta[key].shape[0] != n:
                meta[key].resize((n,))
        for k in self._root["data"].array_keys():
            arr = self._root["data"][k]
            if arr.shape[0] != steps:
                arr.resize((steps, *arr.shape[1:]))
