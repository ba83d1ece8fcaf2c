"""The demo store: demonstrations in one zarr v3 directory (diffusion_policy's ReplayBuffer layout, extended).

    <path>/data/<key>               every episode concatenated along axis 0
    <path>/meta/episode_ends        int64 cumulative ends: episode i is rows [ends[i-1], ends[i])
    <path>/meta/episode_task        int64 task index per episode (into the `tasks` attribute)
    <path>/meta/episode_seed        int64 env seed per episode (-1: unknown)
    <path>/meta/episode_success     bool  did the demonstrator succeed
    <path>/meta/episode_checksum    uint32 [episodes, keys]: crc32 of each key's rows of each episode, in the
                                    sorted key order of its `keys` attribute (format 2)
    attributes: format, format_version, tasks [{name, instruction, env_spec}], action_space, origin

`origin` records who made the store: {"kind": "generated", "task", "images", ...} by data/generate.py,
{"kind": "converted", ...} by the converters, {"kind": "user"} for `DemoStore.create` called from one's
own code. The framework writes only into stores it generated itself (`generated_by_framework`).

Appending is atomic by ordering: data rows and per-episode metadata (checksums included) are written
first and `episode_ends` last, so readers only ever see complete episodes. Rows past the last end
(left by a crash mid-append) are invisible and trimmed when the store is reopened for append.
Format 2 writes every chunk, even all-zero ones, so a missing chunk file is always damage.

`DemoStore.open` runs the cheap checks of data/validate.py (ends, meta rows, task indices, env specs,
camera shapes) and refuses an inconsistent store in one line; `check(deep=True)` also reads every chunk.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from data import deep_check, validate

FORMAT = "mode-il-demo-store"
FORMAT_VERSION = 2
FORMAT_VERSION_CHECKSUMS = 2  # from this version on: meta/episode_checksum, and every chunk written
META_KEYS = {"episode_task": np.int64, "episode_seed": np.int64, "episode_success": np.bool_}
IMAGE_FRAMES_PER_CHUNK = 4
LOWDIM_ROWS_PER_CHUNK = 2048
META_ROWS_PER_CHUNK = 4096
_WRITE_ALL = {"write_empty_chunks": True}  # zarr skips all-zero chunks by default; then absence proves nothing


class StoreError(ValueError):
    """A demo store that cannot be used as asked; the message says what to do."""


def _compressor(image: bool) -> BloscCodec:
    # zstd for everything; bit-shuffling helps float columns, byte-shuffling is better for pixels.
    shuffle = BloscShuffle.shuffle if image else BloscShuffle.bitshuffle
    return BloscCodec(cname="zstd", clevel=3, shuffle=shuffle)


def is_image_key(key: str, value: np.ndarray) -> bool:
    return value.dtype == np.uint8 and value.ndim == 4 and value.shape[-1] == 3


def _raise_first(problems: list[str]) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more problem(s); data.inspect --check lists them)" if problems[1:] else ""
        raise StoreError(problems[0] + more)


def damaged_rows_error(path: str, key: str, episode_ends: np.ndarray, first_row: int, last_row: int,
                       err: BaseException, array: zarr.Array | None = None) -> StoreError:
    """One line for rows of `key` that cannot be decoded: the store, the key, the rows and their episodes
    (every read path says the same: the in-memory load, zarr-backed batches, export). With `array`, the
    rows are narrowed to the first chunk that fails to decode."""
    if array is not None:
        step = int(array.chunks[0])
        for lo in range(first_row - first_row % step, last_row + 1, step):
            try:
                np.asarray(array[lo:lo + step])
            except Exception:  # noqa: BLE001  (whatever the codec raises: this is the damaged chunk)
                first_row, last_row = lo, min(lo + step, array.shape[0]) - 1
                break
    first_ep, last_ep = (int(np.searchsorted(episode_ends, r, side="right")) for r in (first_row, last_row))
    episodes = f"episode {first_ep}" if first_ep == last_ep else f"episodes {first_ep}-{last_ep}"
    return StoreError(
        f"store {path!r}: data/{key} rows {first_row}-{last_row} ({episodes}) cannot be read "
        f"({validate.short_error(err)}); `python -m data.inspect {path} --check` names the damaged chunk and what "
        "to do")


class DemoStore:
    """Read and append demonstrations. Build with `DemoStore.create` or `DemoStore.open`."""

    def __init__(self, root: zarr.Group, path: str, writable: bool) -> None:
        self._root = root
        self.path = path
        self.writable = writable
        self._ends = validate.committed_ends(root["meta/episode_ends"][:])

    # --- construction ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        tasks: Sequence[Mapping[str, Any]],
        action_space: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        origin: Mapping[str, Any] | None = None,
    ) -> DemoStore:
        """A new empty store. `origin` says who made it (module doc); from one's own code leave it None."""
        path = os.fspath(path)
        if os.path.exists(path) and not overwrite:
            raise StoreError(f"{path!r} already exists; open it with DemoStore.open(path, 'a') or pass overwrite")
        entries = validate.checked_tasks(tasks)
        root = zarr.open_group(path, mode="w" if overwrite else "w-", zarr_format=3)
        root.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "tasks": entries,
                "action_space": dict(action_space or {}),
                "origin": dict(origin or {"kind": "user"}),
            }
        )
        root.create_group("data")
        meta = root.create_group("meta")
        for key, dtype in {"episode_ends": np.int64, **META_KEYS}.items():
            meta.create_array(key, shape=(0,), chunks=(META_ROWS_PER_CHUNK,), dtype=dtype)
        return cls(root, path, writable=True)

    @classmethod
    def _open_root(cls, path: str, mode: str) -> zarr.Group:
        """The store's zarr group after the checks that need no data (kind, format, version)."""
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
        if mode == "a" and version < FORMAT_VERSION_CHECKSUMS:
            # Appending would mix episodes with and without checksums, and old all-zero chunks are unwritten.
            raise StoreError(
                f"store {path!r} has format version {version} (written before per-episode checksums): it can be "
                "read and trained on but not appended to; write a new store (python -m data.generate, or convert)"
            )
        return root

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> DemoStore:
        """Open after the cheap consistency checks; an inconsistent store raises one StoreError line."""
        path = os.fspath(path)
        root = cls._open_root(path, mode)
        _raise_first(validate.structure_problems(root, path))
        store = cls(root, path, writable=(mode == "a"))
        if mode == "a":
            store._trim_uncommitted()
        return store

    @classmethod
    def problems_at(cls, path: str | os.PathLike, deep: bool = True) -> list[str]:
        """Every problem of the store at `path`, one line each, without raising (empty: sound)."""
        path = os.fspath(path)
        try:
            root = cls._open_root(path, "r")
        except StoreError as err:
            return [str(err)]
        problems = validate.structure_problems(root, path)
        return problems or (cls(root, path, writable=False).check(deep) if deep else [])

    def check(self, deep: bool = True) -> list[str]:
        """Every problem found, one line each (empty: the store is sound). Deep reads every chunk."""
        problems = validate.structure_problems(self._root, self.path)
        if deep and not problems:  # read the ends afresh: the files are what is checked, not this handle
            ends = validate.committed_ends(self._root["meta/episode_ends"][:])
            problems = deep_check.deep_problems(self._root, self.path, ends)
        return problems

    def validate(self, deep: bool = False) -> None:
        """Raise StoreError with the first problem `check` finds."""
        _raise_first(self.check(deep))

    # --- what is inside ----------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._root.attrs)

    @property
    def format_version(self) -> int:
        return int(self._root.attrs.get("format_version", 0))

    @property
    def origin(self) -> dict[str, Any]:
        """Who made the store ({} for stores written before origins were recorded)."""
        return dict(self._root.attrs.get("origin", {}))

    @property
    def generated_by_framework(self) -> bool:
        """True only for stores data/generate.py created: the only ones the framework may top up."""
        return self.origin.get("kind") == "generated"

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
        return {k: self._read(k, start, end) for k in (keys or self.keys)}

    def load(self, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every committed row of the given keys in memory (small zarr reads cost ms each)."""
        return {k: self._read(k, 0, self.n_steps) for k in (keys or self.keys)}

    def _read(self, key: str, lo: int, hi: int) -> np.ndarray:
        arr = self.array(key)
        try:
            return np.asarray(arr[lo:hi])
        except Exception as err:  # a corrupt chunk raises whatever its codec raises: say where, in one line
            raise damaged_rows_error(self.path, key, self._ends, lo, hi - 1, err, arr) from None

    # --- appending -----------------------------------------------------------------------
    def _create_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        data = self._root["data"]
        for k, v in arrays.items():
            image = is_image_key(k, v)
            rows = IMAGE_FRAMES_PER_CHUNK if image else LOWDIM_ROWS_PER_CHUNK
            data.create_array(
                k, shape=(0, *v.shape[1:]), chunks=(rows, *v.shape[1:]), dtype=v.dtype,
                compressors=[_compressor(image)],
            )
        table = self._root["meta"].create_array(
            "episode_checksum", shape=(0, len(arrays)), chunks=(META_ROWS_PER_CHUNK, len(arrays)), dtype=np.uint32
        )
        table.attrs["keys"] = sorted(arrays)

    def _writer(self, name: str) -> zarr.Array:
        return self._root[name].with_config(_WRITE_ALL)

    def append_episode(
        self, episode: Mapping[str, np.ndarray], task: int = 0, seed: int | None = None, success: bool = True
    ) -> int:
        """Append one episode atomically; returns its index. A failure leaves the store as it was."""
        if not self.writable:
            raise StoreError(f"store {self.path!r} was opened read-only; open it with mode='a' to append")
        if not 0 <= task < len(self.tasks):
            raise StoreError(f"task index {task} out of range: the store has {len(self.tasks)} task(s)")
        shapes = {k: self._root["data"][k].shape[1:] for k in self.keys}
        arrays = validate.checked_episode(episode, shapes, self.tasks)
        if not self.keys:
            self._create_arrays(arrays)
        start, n = self.n_steps, self.n_episodes
        length = len(arrays["action"])
        sums = [validate.checksum(arrays[k]) for k in sorted(arrays)]
        try:
            for k, v in arrays.items():
                arr = self._writer(f"data/{k}")
                arr.resize((start + length, *arr.shape[1:]))
                arr[start:] = v
            for key, value in (("episode_task", task), ("episode_seed", -1 if seed is None else seed),
                               ("episode_success", success), ("episode_checksum", sums)):
                arr = self._writer(f"meta/{key}")
                arr.resize((n + 1, *arr.shape[1:]))
                arr[n] = value
            # The commit point: only now does the episode become visible (validate.committed_ends says why
            # a crash between this resize and this write is harmless).
            ends = self._writer("meta/episode_ends")
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
        self._ends = validate.committed_ends(meta["episode_ends"][:])
        n, steps = self.n_episodes, self.n_steps
        for key in ("episode_ends", *META_KEYS, "episode_checksum"):
            if key in meta and meta[key].shape[0] != n:
                meta[key].resize((n, *meta[key].shape[1:]))
        for k in self._root["data"].array_keys():
            arr = self._root["data"][k]
            if arr.shape[0] != steps:
                arr.resize((steps, *arr.shape[1:]))
