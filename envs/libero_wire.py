"""The message format between the framework and the LIBERO simulator process: plain data and arrays only.

The LIBERO simulator runs under another Python interpreter (.venv-libero), so nothing crosses as a
pickle: a message is a 4-byte big-endian length, a UTF-8 JSON header of that length, then the raw
bytes of the arrays the header lists ({"name", "dtype", "shape"} each, in order). Only numeric
dtypes are accepted, so a message can hold data but never code.

This module imports only the standard library and numpy: both interpreters load it.
"""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO

import numpy as np

ALLOWED_DTYPES = frozenset({"bool", "uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                            "float16", "float32", "float64"})
MAX_HEADER_BYTES = 1 << 24  # a header is small plain data; anything larger is a broken stream


class WireError(RuntimeError):
    """A message that does not follow the format (a broken or foreign stream)."""


def write_message(stream: BinaryIO, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
    """Send `header` (JSON-able, without the key "arrays") and `arrays` as one message."""
    arrays = {k: np.asarray(v, order="C") for k, v in (arrays or {}).items()}  # (ascontiguousarray makes 0-d 1-d)
    specs = []
    for name, a in arrays.items():
        if a.dtype.name not in ALLOWED_DTYPES:
            raise WireError(f"array {name!r} has dtype {a.dtype}; only numeric dtypes cross the pipe")
        specs.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape)})
    body = json.dumps({**header, "arrays": specs}).encode()
    stream.write(struct.pack(">I", len(body)))
    stream.write(body)
    for a in arrays.values():
        stream.write(memoryview(a).cast("B") if a.size else b"")
    stream.flush()


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            raise EOFError("the other side closed the pipe")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_message(stream: BinaryIO) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The next (header, arrays); EOFError when the other side has closed the pipe."""
    (size,) = struct.unpack(">I", _read_exact(stream, 4))
    if size > MAX_HEADER_BYTES:
        raise WireError(f"message header of {size} bytes: not this protocol")
    try:
        header = json.loads(_read_exact(stream, size))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WireError(f"message header is not JSON ({err})") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise WireError("message header is not an object listing its arrays")
    arrays = {}
    for spec in header.pop("arrays"):
        dtype = str(spec.get("dtype"))
        if dtype not in ALLOWED_DTYPES:
            raise WireError(f"array {spec.get('name')!r} has dtype {dtype!r}; only numeric dtypes are accepted")
        shape = tuple(int(s) for s in spec["shape"])
        if any(s < 0 for s in shape):
            raise WireError(f"array {spec.get('name')!r} has a negative dimension {shape}")
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        arrays[str(spec["name"])] = np.frombuffer(_read_exact(stream, n), dtype=dtype).reshape(shape).copy()
    return header, arrays
