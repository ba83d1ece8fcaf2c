"""The deep check of a demo store: read every chunk of every array (`DemoStore.check(deep=True)`,
`python -m data.inspect STORE --check`).

Zarr alone reads a deleted chunk as zeros (its fill value) and a corrupt one as a codec traceback; this
names the chunk, the rows and the episodes instead, finds non-finite floats, and compares each episode
with the checksum append_episode recorded (format 2), which catches any other change to the files.
"""

from __future__ import annotations

import numpy as np
import zarr

from data.validate import REWRITE, checksum, chunk_rows, fault_line, missing_data_chunks, short_error

WINDOW_BYTES = 32 << 20  # episodes are read in windows of about this size


def deep_problems(root: zarr.Group, path: str, ends: np.ndarray) -> list[str]:
    """Read everything: chunks present (format 2), decodable, finite floats, checksums (format 2)."""
    from data.store import FORMAT_VERSION_CHECKSUMS

    p = f"store {path!r}"
    meta, data = root["meta"], root["data"]
    n = len(ends)
    out = []
    for key in meta.array_keys():
        try:
            meta[key][:]
        except Exception as err:
            out.append(f"{p}: meta/{key} cannot be decoded ({short_error(err)}): the file is corrupt; {REWRITE}")
    if not n:
        return out
    keys = sorted(data.array_keys())
    sums = None
    if int(root.attrs.get("format_version", 0)) >= FORMAT_VERSION_CHECKSUMS:
        try:
            sums = np.asarray(meta["episode_checksum"][:n])
        except Exception:
            sums = None  # reported above as undecodable
    for col, key in enumerate(keys):
        out += _key_problems(path, key, data[key], ends, None if sums is None else sums[:, col])
    return out


def _key_problems(path: str, key: str, arr: zarr.Array, ends: np.ndarray, sums: np.ndarray | None) -> list[str]:
    """Every fault of one data array: missing chunks (format 2), undecodable chunks, non-finite floats, and
    episodes whose bytes no longer match their checksum. One line per fault, not one per symptom."""
    p, name = f"store {path!r}", f"data/{key}"
    out: list[str] = []
    bad: set[int] = set()  # episodes already reported for this key
    if sums is not None:  # format 2 wrote every chunk
        for line, episodes in missing_data_chunks(path, key, arr, ends):
            out.append(line)
            bad.update(episodes)
    steps = int(ends[-1])
    starts = np.concatenate([[0], ends[:-1]])
    budget = max(1, WINDOW_BYTES // max(1, arr.dtype.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))))
    e0 = 0
    while e0 < len(ends):
        e1 = e0  # a window of whole episodes, read at once
        while e1 + 1 < len(ends) and ends[e1 + 1] - starts[e0] <= budget:
            e1 += 1
        lo, hi = int(starts[e0]), int(ends[e1])
        try:
            values = np.asarray(arr[lo:hi])
        except Exception:  # find the chunk(s) that do not decode; the window's other episodes are read alone
            values = None
            for i in range(lo // arr.chunks[0], -(-hi // arr.chunks[0])):
                c_lo, c_hi = chunk_rows(arr, i, steps)
                try:
                    arr[c_lo:c_hi]
                except Exception as err:
                    file = f"{name}/{arr.metadata.encode_chunk_key((i, *[0] * (arr.ndim - 1)))}"
                    line, episodes = fault_line(p, f"chunk {file} cannot be decoded ({short_error(err)}): the file is "
                                            "corrupt", ends, c_lo, c_hi)
                    out.append(line)
                    bad.update(episodes)
        for e in range(e0, e1 + 1):
            if e in bad:
                continue
            a, b = int(starts[e]), int(ends[e])
            rows = values[a - lo: b - lo] if values is not None else np.asarray(arr[a:b])
            if rows.dtype.kind in "fc" and not np.isfinite(rows).all():
                r = a + int(np.flatnonzero(~np.isfinite(rows).reshape(len(rows), -1).all(1))[0])
                out.append(f"{p}: {name} holds NaN or inf in episode {e} (row {r}); drop episode {e} or {REWRITE}")
            elif sums is not None and checksum(rows) != int(sums[e]):
                out.append(f"{p}: {name} of episode {e} differs from the checksum recorded when it was written "
                           f"(its files changed since); {REWRITE}, or drop episode {e}")
        e0 = e1 + 1
    return out
