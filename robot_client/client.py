"""The robot side of a policy server: numpy + msgpack + websockets, no torch.

    client = PolicyClient("ws://127.0.0.1:8765", token=None)
    client.metadata                     # obs schema, action dim, horizon, n_action_steps, tasks, ...
    chunk = client.infer(obs, task=0)   # obs {key: [n_obs_steps, ...]} -> [n_action_steps, action_dim]

A lost connection is re-opened with exponential backoff (within the request's deadline); errors the server
sends arrive as ServerError with its typed code.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from robot_client.protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, ProtocolError, decode, encode

# a server that closes the connection because of what we sent: reconnecting would not help
FATAL_CODES = ("unauthorized", "bad_protocol")


class ServerError(RuntimeError):
    """The server refused a request: `code` is one of protocol.ERROR_CODES."""

    def __init__(self, code: str, message: str, request_id: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.request_id = code, request_id


class ServerUnavailable(ConnectionError):
    """No connection to the server within the time allowed."""


class PolicyClient:
    def __init__(self, url: str, token: str | None = None, deadline_s: float = 1.0, connect_timeout_s: float = 5.0,
                 backoff_s: tuple[float, float] = (0.05, 2.0), max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.url, self.token, self.deadline_s = url, token, deadline_s
        self.connect_timeout_s, self.backoff_s, self.max_message_bytes = connect_timeout_s, backoff_s, max_message_bytes
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # one request on the wire at a time (the scheduler's thread or the caller)
        self.metadata: dict[str, Any] = {}
        self.last_timings: dict[str, float] = {}
        self.reconnects = 0
        self._open(time.monotonic() + connect_timeout_s)

    # --- connection -----------------------------------------------------------------------------
    def _open(self, give_up_at: float) -> None:
        delay, why = self.backoff_s[0], "no answer"
        while True:
            try:
                ws = connect(self.url, open_timeout=max(0.05, give_up_at - time.monotonic()),
                             max_size=self.max_message_bytes, compression=None, legacy=True)
                ws.send(encode({"type": "hello", "protocol": PROTOCOL_VERSION, "token": self.token}))
                reply = decode(ws.recv(timeout=max(0.05, give_up_at - time.monotonic())), self.max_message_bytes)
                if reply["type"] == "error":
                    ws.close()
                    raise ServerError(reply["code"], reply["message"])
                self._ws, self.metadata = ws, reply
                return
            except ServerError as err:
                if err.code in FATAL_CODES:
                    raise
                why = str(err)
            except InvalidURI:
                raise
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, ProtocolError) as err:
                why = f"{type(err).__name__}: {err}".splitlines()[0]
            if time.monotonic() + delay >= give_up_at:
                raise ServerUnavailable(f"no policy server at {self.url} (retried with backoff; last: {why})")
            time.sleep(delay)
            delay = min(2 * delay, self.backoff_s[1])

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- requests -------------------------------------------------------------------------------
    def infer(self, obs: dict[str, np.ndarray], task: int | None = None, instruction: str | None = None,
              deadline_s: float | None = None, prefix: np.ndarray | None = None, delay_steps: int = 0,
              noise: np.ndarray | None = None) -> np.ndarray:
        """One action chunk [n_action_steps, action_dim] for `obs` ({key: [n_obs_steps, ...]} as the metadata
        says). Real-time chunking: `prefix` [P, action_dim] the actions already committed from this
        observation's time on, `delay_steps` how many of them run before this answer can be used."""
        deadline_s = self.deadline_s if deadline_s is None else deadline_s
        give_up_at = time.monotonic() + deadline_s
        with self._lock:
            rid = next(self._ids)
            msg: dict[str, Any] = {"type": "infer", "id": rid, "obs": obs}
            if task is not None:
                msg["task"] = int(task)
            if instruction is not None:
                msg["instruction"] = instruction
            if noise is not None:
                msg["noise"] = np.asarray(noise, dtype=np.float32)
            if prefix is not None:
                msg.update(prefix=np.asarray(prefix, dtype=np.float32), delay_steps=int(delay_steps))
            while True:
                left = give_up_at - time.monotonic()
                if left <= 0:
                    raise ServerError("timeout", f"no answer within {1e3 * deadline_s:.0f} ms", rid)
                try:
                    if self._ws is None:
                        self.reconnects += 1
                        self._open(give_up_at)
                        left = give_up_at - time.monotonic()
                    msg["deadline_ms"] = max(1e-3, 1e3 * left)
                    self._ws.send(encode(msg))
                    return self._await(rid, give_up_at)
                except (ConnectionClosed, OSError):
                    self._ws = None  # the server went away: reconnect and send again within the deadline

    def _await(self, rid: int, give_up_at: float) -> np.ndarray:
        while True:
            try:
                frame = self._ws.recv(timeout=max(1e-3, give_up_at - time.monotonic()))
            except TimeoutError:
                raise ServerError("timeout", "no answer before the deadline", rid) from None
            reply = decode(frame, self.max_message_bytes)
            if reply.get("id") != rid:
                continue  # the late answer to an earlier request that timed out here: never taken for this one
            if reply["type"] == "error":
                raise ServerError(reply["code"], reply["message"], rid)
            self.last_timings = reply.get("timings_ms", {})
            return np.array(reply["action"])  # a writable copy, not a view of the frame
