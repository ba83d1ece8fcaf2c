"""The wire codec: round trips, and every malformed frame refused with a typed code before any allocation."""

from __future__ import annotations

import subprocess
import sys

import msgpack
import numpy as np
import pytest

from robot_client.protocol import ARRAY_EXT, DTYPES, ERROR_CODES, ProtocolError, decode, encode, error_message


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_arrays_round_trip_bit_exactly(dtype) -> None:
    arr = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    got = decode(encode({"type": "x", "a": arr, "nested": {"b": [arr[0], 3, "s"]}}))
    assert got["a"].dtype == arr.dtype and got["a"].shape == arr.shape and np.array_equal(got["a"], arr)
    assert np.array_equal(got["nested"]["b"][0], arr[0]) and got["nested"]["b"][1:] == [3, "s"]


def test_big_endian_and_empty_arrays() -> None:
    arr = np.arange(5, dtype=">f4")
    assert np.array_equal(decode(encode({"type": "x", "a": arr}))["a"], arr.astype("<f4"))
    assert decode(encode({"type": "x", "a": np.zeros((0, 3), np.uint8)}))["a"].shape == (0, 3)


def test_objects_cannot_be_sent() -> None:
    with pytest.raises(TypeError):
        encode({"type": "x", "a": np.array([object()])})
    with pytest.raises(TypeError):
        encode({"type": "x", "a": {1, 2}})


def ext(dtype, shape, raw) -> msgpack.ExtType:
    return msgpack.ExtType(ARRAY_EXT, msgpack.packb([dtype, shape, raw]))


@pytest.mark.parametrize("frame, code", [
    (b"\x93\x01", "bad_frame"),  # truncated
    (b"\xc1", "bad_frame"),  # never-used byte
    ("text", "bad_frame"),
    (msgpack.packb([1, 2]), "bad_frame"),  # not a map
    (msgpack.packb({"no": "type"}), "bad_frame"),
    (msgpack.packb({"type": "x", "a": ext("|O", [1], b"a")}), "bad_frame"),  # object dtype
    (msgpack.packb({"type": "x", "a": ext("<f4", [10**12, 10**12], b"abcd")}), "bad_frame"),  # huge declared
    (msgpack.packb({"type": "x", "a": ext("<f4", [3], b"abcd")}), "bad_frame"),  # bytes short
    (msgpack.packb({"type": "x", "a": ext("<f4", [-1], b"")}), "bad_frame"),
    (msgpack.packb({"type": "x", "a": ext("<f4", [1] * 7, b"abcd")}), "bad_frame"),  # too many dims
    (msgpack.packb({"type": "x", "a": msgpack.ExtType(9, b"")}), "bad_frame"),
    (msgpack.packb({1: 2, "type": "x"}), "bad_frame"),  # non-string keys
    (b"\x91" * 5000 + b"\xc0", "bad_frame"),  # nesting bomb
])
def test_malformed_frames_are_refused_with_a_typed_code(frame, code) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(frame)
    assert err.value.code == code and "\n" not in str(err.value)


def test_size_cap_is_checked_before_parsing() -> None:
    frame = encode({"type": "x", "a": np.zeros(1000, np.float32)})
    with pytest.raises(ProtocolError) as err:
        decode(frame, max_bytes=len(frame) - 1)
    assert err.value.code == "too_large"
    assert decode(frame, max_bytes=len(frame))["a"].shape == (1000,)


def test_error_messages_are_one_line_with_a_known_code() -> None:
    msg = error_message("internal", "Traceback (most recent call last):\n  File ...", 7)
    assert msg == {"type": "error", "id": 7, "code": "internal", "message": "Traceback (most recent call last):"}
    with pytest.raises(AssertionError):
        ProtocolError("no_such_code", "x")
    assert set(ERROR_CODES) >= {"timeout", "unauthorized", "bad_observation", "too_large"}


def test_robot_client_imports_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np, robot_client\n"
            "from robot_client.protocol import decode, encode\n"
            "assert decode(encode({'type': 't', 'a': np.ones(2)}))['a'].sum() == 2\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "print(robot_client.PolicyClient.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "PolicyClient"
