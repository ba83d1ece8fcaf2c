"""Is a demo store whole and consistent, and is what is about to be written into one sound?

`DemoStore.open` runs `structure_problems` (metadata, the small meta arrays, the chunk files of low-dim
arrays: milliseconds); data/deep_check.py reads every chunk. `checked_tasks` / `checked_episode` are the
input checks of `DemoStore.create` / `append_episode`.

Each problem is one line naming the store, the key, the episode(s) and what to do, because the alternative
is what zarr does on its own: a deleted chunk reads as zeros (its fill value), a corrupt one is a blosc
traceback, and a bad `episode_ends` turns into negative lengths or an IndexError deep inside training.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

REWRITE = "regenerate the store (python -m data.generate) or re-convert it from its source"


def checksum(rows: np.ndarray) -> int:
    """crc32 of the rows' bytes in C order: recorded by append_episode, recomputed by the deep check."""
    return zlib.crc32(np.ascontiguousarray(rows))


def committed_ends(raw: np.ndarray) -> np.ndarray:
    """`meta/episode_ends` without an uncommitted last row.

    Appending resizes episode_ends and then writes its last value: two file writes zarr cannot make one.
    A crash between them leaves one extra row holding the fill value 0, which no real end can be (an
    episode has at least one step), so that row is no episode; every other bad value is reported.
    """
    raw = np.asarray(raw, dtype=np.int64)
    return raw[:-1] if len(raw) and raw[-1] == 0 else raw


def env_spec_error(spec: Any) -> str | None:
    """Why a task's env_spec cannot rebuild a simulator, or None. Empty/None means "no simulator"."""
    if not spec:
        return None
    if not isinstance(spec, dict):
        return f"env_spec must be a dict of EnvSpec fields, got {type(spec).__name__}"
    import dataclasses

    from envs.spec import EnvSpec

    required = [f.name for f in dataclasses.fields(EnvSpec) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in spec]
    if missing:
        return f"it lacks {missing} (required: {', '.join(required)})"
    try:
        EnvSpec.from_dict(spec)
    except (TypeError, ValueError) as err:
        return str(err)
    return None


def checked_tasks(tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Task entries with their env specs validated and completed (every EnvSpec field, defaults filled in)."""
    from data.store import StoreError
    from envs.spec import EnvSpec

    if not tasks:
        raise StoreError("a store needs at least one task ({name, instruction, env_spec})")
    out = []
    for i, t in enumerate(tasks):
        missing = {"name", "instruction"} - set(t)
        if missing:
            raise StoreError(f"task entry {dict(t)} lacks {sorted(missing)}")
        entry = dict(t)
        if err := env_spec_error(entry.get("env_spec")):
            raise StoreError(f"task {i} ({entry['name']!r}): invalid env_spec: {err}; the fields are those of "
                             "envs.spec.EnvSpec (docs/store.md: write a store from your own code)")
        # Stored complete, so a later change of EnvSpec's defaults cannot change the simulator it rebuilds.
        entry["env_spec"] = EnvSpec.from_dict(entry["env_spec"]).to_dict() if entry.get("env_spec") else {}
        out.append(entry)
    return out


def checked_episode(episode: Mapping[str, np.ndarray], existing: Mapping[str, tuple],
                    tasks: list[dict]) -> dict[str, np.ndarray]:
    """The episode's arrays as they will be stored (floats as float32), after the checks append makes.

    `existing` maps the store's keys to their per-step shapes ({} before the first episode). Every float
    key must be finite, not only actions: a NaN observation otherwise surfaces as a non-finite loss. Camera
    frames must be those the tasks' env specs promise.
    """
    from data.store import StoreError, is_image_key

    if "action" not in episode:
        raise StoreError("an episode needs an 'action' array")
    arrays = {k: np.asarray(v) for k, v in episode.items()}
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise StoreError(f"ragged episode: all arrays need the same length, got {lengths}")
    if lengths["action"] == 0:
        raise StoreError("an episode needs at least one step")
    if existing and sorted(arrays) != sorted(existing):
        raise StoreError(f"episode keys {sorted(arrays)} differ from the store's keys {sorted(existing)}")
    out = {}
    for k, v in arrays.items():
        if not is_image_key(k, v):
            if v.dtype == np.uint8:
                raise StoreError(f"uint8 key {k!r} must be images shaped [L, H, W, 3], got {v.shape}")
            if v.dtype.kind in "fc" and not np.isfinite(v).all():
                row = int(np.flatnonzero(~np.isfinite(v).reshape(len(v), -1).all(1))[0])
                raise StoreError(f"episode key {k!r} holds NaN or inf (step {row}); fix the demonstrator or "
                                 "drop the episode")
            v = v.astype(np.float32) if v.dtype.kind == "f" else v
        if existing and tuple(existing[k]) != v.shape[1:]:
            raise StoreError(f"key {k!r} has shape {v.shape[1:]} per step; the store has {tuple(existing[k])}")
        out[k] = v
    problems = spec_problems(tasks, out, "", "the episode", "record frames of that size or fix the env_spec")
    if problems:
        raise StoreError(problems[0])
    return out


def _span(e0: int, e1: int) -> str:
    return f"episode {e0}" if e0 == e1 else f"episodes {e0}-{e1}"


def _episodes_of(ends: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """First and last episode touching rows [lo, hi)."""
    first = int(np.searchsorted(ends, lo, side="right"))
    last = int(np.searchsorted(ends, hi - 1, side="right"))
    return first, min(last, len(ends) - 1)


def chunk_rows(arr: zarr.Array, i: int, rows: int) -> tuple[int, int]:
    r = arr.chunks[0]
    return i * r, min((i + 1) * r, rows)


def missing_chunks(store_path: str, name: str, arr: zarr.Array, rows: int) -> Iterator[tuple[int, str]]:
    """(row-chunk index, file) of each absent chunk file covering rows [0, rows) of the array at `name`.

    Only meaningful for format-2 stores, which write every chunk (write_empty_chunks): older stores left
    all-zero chunks unwritten on purpose, so an absent file there may be legitimate.
    """
    others = [range(-(-s // c)) for s, c in zip(arr.shape[1:], arr.chunks[1:])]
    for i in range(-(-rows // arr.chunks[0])):
        for rest in itertools.product(*others):
            key = arr.metadata.encode_chunk_key((i, *rest))
            if not Path(store_path, name, key).is_file():
                yield i, f"{name}/{key}"
                break


def fault_line(p: str, what: str, ends: np.ndarray, lo: int, hi: int) -> tuple[str, range]:
    """The line for damage to rows [lo, hi) of an array, and the episodes it takes down."""
    e0, e1 = _episodes_of(ends, lo, hi)
    return (f"{p}: {what} (rows {lo}-{hi - 1}, {_span(e0, e1)}): {REWRITE}, or drop {_span(e0, e1)}",
            range(e0, e1 + 1))


def missing_data_chunks(path: str, key: str, arr: zarr.Array, ends: np.ndarray) -> Iterator[tuple[str, range]]:
    steps = int(ends[-1])
    for i, file in missing_chunks(path, f"data/{key}", arr, steps):
        yield fault_line(f"store {path!r}", f"chunk {file} is missing, so zarr would read its fill value", ends,
                     *chunk_rows(arr, i, steps))


def short_error(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def structure_problems(root: zarr.Group, path: str) -> list[str]:
    """The cheap checks run on every open; an empty list means the store's bookkeeping is consistent."""
    from data.store import FORMAT_VERSION_CHECKSUMS, META_KEYS

    p = f"store {path!r}"
    tasks = root.attrs.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) and "name" in t for t in tasks):
        return [f"{p}: its tasks attribute is not a list of {{name, instruction, env_spec}}: "
                f"the store is corrupt; {REWRITE}"]
    specs = []  # an invalid spec is reported alongside, not instead of, the data's problems
    for i, t in enumerate(tasks):
        if err := env_spec_error(t.get("env_spec")):
            specs.append(f"{p}: task {i} ({t['name']!r}) has an invalid env_spec ({err}); "
                       f"fix the store's tasks attribute or {REWRITE}")
    for key in ("episode_ends", *META_KEYS):
        if f"meta/{key}" not in root:
            return specs + [f"{p}: meta/{key} is missing: the store is corrupt; {REWRITE}"]
    if "data" not in root:
        return specs + [f"{p}: the data group is missing: the store is corrupt; {REWRITE}"]
    meta, data = root["meta"], root["data"]
    version = int(root.attrs.get("format_version", 0))
    try:
        ends = committed_ends(meta["episode_ends"][:])
    except Exception as err:  # a corrupt chunk raises whatever its codec raises
        return specs + [f"{p}: meta/episode_ends cannot be decoded ({short_error(err)}): the file is corrupt; "
                        f"{REWRITE}"]
    n = len(ends)
    # episode_ends' chunk is never all zeros, so even old stores wrote it: absent means deleted.
    gone = [f for _, f in missing_chunks(path, "meta/episode_ends", meta["episode_ends"], n)]
    if version >= FORMAT_VERSION_CHECKSUMS:
        for key in META_KEYS:
            gone += [f for _, f in missing_chunks(path, f"meta/{key}", meta[key], n)]
    if gone:
        return specs + [f"{p}: chunk {gone[0]} is missing: the store is corrupt; {REWRITE}"]
    if n:
        bad = np.flatnonzero(np.diff(ends, prepend=0) <= 0)
        if len(bad):
            i = int(bad[0])
            return specs + [f"{p}: meta/episode_ends is not strictly increasing at episode {i} (ends at row "
                          f"{ends[i]}, after {ends[i - 1] if i else 0}): the store is corrupt; {REWRITE}"]
    out = []
    for key in META_KEYS:
        if meta[key].shape[0] < n:
            out.append(f"{p}: meta/{key} has {meta[key].shape[0]} rows for {n} episodes: "
                       f"the store is corrupt; {REWRITE}")
    keys = sorted(data.array_keys())
    if n and "action" not in keys:
        out.append(f"{p}: it has {n} episodes but no data/action: the store is corrupt; {REWRITE}")
    short = sorted((data[k].shape[0], k) for k in keys if n and data[k].shape[0] < ends[-1])
    if short:  # one fault however many keys it shows in: name the shortest key and count the others
        rows, key = short[0]
        j = int(np.searchsorted(ends, rows, side="right"))
        others = f" (and {len(short) - 1} other key(s))" if len(short) > 1 else ""
        out.append(f"{p}: meta/episode_ends says episode {j} ends at row {ends[j]}, past the {rows} rows of "
                   f"data/{key}{others}: the store is corrupt; {REWRITE}, or drop {_span(j, n - 1)}")
    if out or not n:
        return specs + out
    if version >= FORMAT_VERSION_CHECKSUMS:
        # Low-dim arrays have a chunk per 2048 rows, so checking their files is cheap; camera arrays have
        # one per 4 frames and are left to the deep check.
        for key in keys:
            if not (data[key].dtype == np.uint8 and data[key].ndim == 4):
                out += [line for line, _ in missing_data_chunks(path, key, data[key], ends)]
    try:
        task = np.asarray(meta["episode_task"][:n])
    except Exception as err:
        return specs + [f"{p}: meta/episode_task cannot be decoded ({short_error(err)}): the file is corrupt; "
                        f"{REWRITE}"]
    bad = np.flatnonzero((task < 0) | (task >= len(tasks)))
    if len(bad):
        i = int(bad[0])
        out.append(f"{p}: meta/episode_task of episode {i} is {task[i]}, but the store has {len(tasks)} task(s): "
                   f"{REWRITE}, or drop episode {i}")
    if version >= FORMAT_VERSION_CHECKSUMS:
        out += _checksum_table_problems(meta, keys, n, p)
    cameras = spec_problems(tasks, data, f"{p}: ", "the data", f"{REWRITE} with matching cameras and image_size")
    return specs + out + cameras


def _checksum_table_problems(meta: zarr.Group, keys: list[str], n: int, p: str) -> list[str]:
    if "episode_checksum" not in meta:
        return [f"{p}: meta/episode_checksum is missing: the store is corrupt; {REWRITE}"]
    table = meta["episode_checksum"]
    if table.shape[0] < n or list(table.attrs.get("keys", [])) != keys:
        return [f"{p}: meta/episode_checksum ({table.shape[0]} rows for keys {table.attrs.get('keys')}) does "
                f"not match the {n} episodes of keys {keys}: the store is corrupt; {REWRITE}"]
    return []


def spec_problems(tasks: list[dict], arrays: Mapping[str, Any], prefix: str, holder: str, advice: str) -> list[str]:
    """Camera frames each task's env spec promises (`<camera>_image`, uint8 image_size x image_size x 3) that
    `arrays` (the store's data group, or an episode being appended) lacks or holds at another shape.

    Evaluation rebuilds the simulator from the spec, so frames of another size would only fail there."""
    from envs.spec import EnvSpec

    out = []
    for i, t in enumerate(tasks):
        if not t.get("env_spec") or env_spec_error(t["env_spec"]):
            continue
        spec = EnvSpec.from_dict(t["env_spec"])
        want = (spec.image_size, spec.image_size, 3)
        for cam in spec.cameras:
            key = f"{cam}_image"
            where = f"{prefix}task {i} ({t['name']!r}) observes camera {cam!r} at {want[0]}x{want[1]} in its env_spec"
            if key not in arrays:
                out.append(f"{where} but {holder} has no {key}; {advice}")
            elif arrays[key].dtype != np.uint8 or tuple(arrays[key].shape[1:]) != want:
                out.append(f"{where} but {holder}'s {key} holds {tuple(arrays[key].shape[1:])} "
                           f"{arrays[key].dtype} frames; {advice}")
    return out
