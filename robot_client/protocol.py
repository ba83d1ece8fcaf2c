"""The wire format between a policy server and its robot clients: msgpack maps with numpy arrays as raw
bytes. Nothing is ever unpickled: an array travels as msgpack ext type ARRAY_EXT holding
[dtype string, shape, raw bytes], and only the dtypes of DTYPES come back out of a frame.

Messages (every one a map with a "type"):
  client -> server   hello  {protocol, token}                      first message of a connection
                     infer  {id, deadline_ms, obs {key: [To, ...]}, task | instruction,
                             noise? [T, Da], prefix? [P, Da], delay_steps?}
  server -> client   metadata {protocol, ...the policy's metadata}  the answer to hello
                     action {id, action [Ta, Da], timings_ms {decode, queue, model, encode}}
                     error  {id | None, code, message}              code: one of ERROR_CODES

A deadline is relative (milliseconds from the server's receipt), so the two clocks never have to agree.
This module needs numpy and msgpack only: the robot side imports it without torch.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
ARRAY_EXT = 1
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # default frame cap, checked before anything is decoded
MAX_NDIM = 6
# little-endian only, so a frame means the same on every host
DTYPES = frozenset(np.dtype(t).str for t in ("bool", "uint8", "int8", "int16", "int32", "int64",
                                             "float16", "float32", "float64"))

ERROR_CODES = {
    "bad_frame": "the message is not a decodable frame of this protocol",
    "too_large": "the message exceeds the server's size cap",
    "bad_protocol": "the client speaks another protocol version",
    "unauthorized": "missing or wrong token",
    "bad_request": "a field is missing or has the wrong type",
    "bad_observation": "the observation does not match the policy's schema",
    "rate_limited": "too many requests from this client",
    "overloaded": "the server's queue is full",
    "timeout": "the deadline passed before the answer was ready",
    "internal": "the model failed on this request",
}


class ProtocolError(ValueError):
    """A frame or message that breaks the protocol: `code` is one of ERROR_CODES, the message one line."""

    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code


def pack_array(arr: np.ndarray) -> msgpack.ExtType:
    """An array as the ext value `encode` writes (so a caller can pack it ahead of the message)."""
    arr = np.ascontiguousarray(arr)
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    arr = arr.astype(dtype, copy=False)
    if arr.dtype.str not in DTYPES:
        raise TypeError(f"arrays of dtype {arr.dtype} cannot be sent; use one of {sorted(DTYPES)}")
    payload = msgpack.packb([arr.dtype.str, list(arr.shape), arr.tobytes()], use_bin_type=True)
    return msgpack.ExtType(ARRAY_EXT, payload)


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return pack_array(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode a {type(obj).__name__}")


def encode(message: dict[str, Any]) -> bytes:
    """A message map -> one binary frame."""
    return msgpack.packb(message, default=_pack_default, use_bin_type=True)


def _array_from_ext(code: int, data: bytes) -> np.ndarray:
    if code != ARRAY_EXT:
        raise ProtocolError("bad_frame", f"unknown msgpack extension type {code}")
    try:
        dtype, shape, raw = msgpack.unpackb(data, raw=False, max_array_len=MAX_NDIM + 1)
    except Exception:
        raise ProtocolError("bad_frame", "an array header does not decode") from None
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ProtocolError("bad_frame", f"array dtype {dtype!r} is not allowed")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n for n in shape)):
        raise ProtocolError("bad_frame", "an array shape must be a list of at most 6 non-negative integers")
    if not isinstance(raw, bytes):
        raise ProtocolError("bad_frame", "array data must be binary")
    itemsize = np.dtype(dtype).itemsize
    count = 1
    for n in shape:  # no product of huge declared dimensions is ever allocated: compare with the bytes sent
        count *= n
        if count * itemsize > len(raw):
            break
    if count * itemsize != len(raw):
        raise ProtocolError("bad_frame", f"array of shape {shape} and dtype {dtype} does not match its "
                            f"{len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def decode(frame: bytes | str, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """One binary frame -> a message map with a string "type"; ProtocolError for anything else.
    The size is checked first, before a byte is parsed."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise ProtocolError("bad_frame", "frames are binary, not text")
    if len(frame) > max_bytes:
        raise ProtocolError("too_large", f"message of {len(frame)} bytes exceeds the cap of {max_bytes}")
    try:
        message = msgpack.unpackb(frame, raw=False, ext_hook=_array_from_ext, strict_map_key=True)
    except ProtocolError:
        raise
    except Exception as err:
        raise ProtocolError("bad_frame", f"the message does not decode ({type(err).__name__})") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("bad_frame", "a message must be a map with a string 'type'")
    return message


def error_message(code: str, message: str, request_id: Any = None) -> dict[str, Any]:
    """The error reply: a typed code and one line (never a traceback)."""
    first_line = str(message).splitlines()[0] if str(message) else ERROR_CODES[code]
    return {"type": "error", "id": request_id, "code": code, "message": first_line[:300]}
