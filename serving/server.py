"""The policy server: WebSocket connections (one per robot), a handshake, requests validated and queued
for the inference thread, answers named by request id, and a /healthz that the model never blocks.

    config = ServerConfig(host="127.0.0.1", port=8765, token=None)
    with ServerThread(ServedModel.load("last.ckpt"), config) as server:   # or: asyncio.run(serve(...))
        ...  # ws://127.0.0.1:{server.port}

Safe by default: loopback only unless a token is set; the token is compared in constant time; frames over
the cap are refused before decoding; per-client connection, rate and in-flight limits; the contents of
observations are never logged; errors are a code and one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import itertools
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from robot_client.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    decode,
    encode,
    error_message,
    pack_array,
)
from serving.batcher import Batcher, Job
from serving.model import ServeError

log = logging.getLogger("serve")
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765  # 0: any free port (tests)
    token: str | None = None  # required by any bind that is not loopback
    max_batch: int = 8  # requests from all clients answered by one model call
    batch_wait_ms: float = 2.0  # how long the first request of a batch waits for others (with 2+ clients)
    max_queue: int = 64  # requests waiting for the model, all clients together; more -> 'overloaded'
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_connections: int = 64
    max_connections_per_client: int = 4  # per remote address
    rate_limit_per_s: float = 100.0  # requests per second per connection (token bucket, burst = one second's)
    max_in_flight: int = 4  # unanswered requests per connection
    hello_timeout_s: float = 5.0
    control_rate_hz: float = 20.0  # sent in the metadata: the rate the policy's actions were recorded at

    def check(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise ServeError(f"host={self.host} exposes the policy beyond this machine: set token=... (or keep "
                             "host=127.0.0.1 and reach it through an SSH tunnel, docs/deploy.md)")
        if self.token is not None and len(self.token) < 16:
            raise ServeError("token must have at least 16 characters (e.g. python -c 'import secrets; "
                             "print(secrets.token_urlsafe(24))')")
        if not 0 <= self.port < 65536:
            raise ServeError(f"port={self.port} is not a TCP port")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _RateLimit:
    def __init__(self, per_s: float) -> None:
        self.per_s, self.tokens, self.last = per_s, per_s, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.per_s, self.tokens + (now - self.last) * self.per_s)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class PolicyServer:
    def __init__(self, model: Any, config: ServerConfig) -> None:
        config.check()
        self.model, self.config = model, config
        self.batcher = Batcher(model, config.max_batch, config.batch_wait_ms, config.max_queue)
        self.metadata = model.schema.metadata(config.control_rate_hz, model.model_hash, model.policy.name)
        self.metadata["rtc"] = model.supports_rtc
        self._ids = itertools.count(1)
        self._per_client: dict[str, int] = defaultdict(int)
        self._connections = 0
        self.errors_sent: dict[str, int] = defaultdict(int)  # code -> count (benchmarks, logs)

    # --- HTTP: /healthz ------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Any) -> Any:
        if request.path == "/healthz":
            if self.batcher.ready.is_set():
                return connection.respond(HTTPStatus.OK, "ok\n")
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "warming up\n")
        return None

    # --- one connection ------------------------------------------------------------------------
    async def _send_error(self, ws: ServerConnection, code: str, message: str, rid: Any = None) -> None:
        self.errors_sent[code] += 1
        await ws.send(encode(error_message(code, message, rid if isinstance(rid, int) else None)))

    async def handle(self, ws: ServerConnection) -> None:
        peer = str(ws.remote_address[0]) if ws.remote_address else "?"
        if self._connections >= self.config.max_connections or \
                self._per_client[peer] >= self.config.max_connections_per_client:
            await self._send_error(ws, "rate_limited", "too many connections from this client")
            await ws.close(1013, "too many connections")
            return
        self._connections += 1
        self._per_client[peer] += 1
        client = next(self._ids)
        self.batcher.client_opened()  # cancel_client, below, closes it
        tasks: set[asyncio.Task] = set()
        try:
            if await self._handshake(ws):
                log.info("client %d connected from %s", client, peer)
                await self._serve_requests(ws, client, tasks)
        except ConnectionClosed:
            pass
        finally:
            dropped = self.batcher.cancel_client(client)
            for t in tasks:
                t.cancel()
            self._connections -= 1
            self._per_client[peer] -= 1
            if not self._per_client[peer]:
                del self._per_client[peer]
            log.info("client %d left (%d queued requests dropped)", client, dropped)

    async def _handshake(self, ws: ServerConnection) -> bool:
        try:
            frame = await asyncio.wait_for(ws.recv(), self.config.hello_timeout_s)
            hello = decode(frame, self.config.max_message_bytes)
        except TimeoutError:
            await ws.close(1008, "no hello")
            return False
        except ProtocolError as err:
            await self._send_error(ws, err.code, str(err))
            await ws.close(1008, "bad hello")
            return False
        if hello.get("type") != "hello" or hello.get("protocol") != PROTOCOL_VERSION:
            await self._send_error(ws, "bad_protocol", f"send {{type: hello, protocol: {PROTOCOL_VERSION}}} "
                                   f"first; this server speaks protocol {PROTOCOL_VERSION}")
            await ws.close(1002, "protocol version")
            return False
        if self.config.token is not None:
            given = hello.get("token")
            given = given.encode() if isinstance(given, str) else b""
            if not hmac.compare_digest(given, self.config.token.encode()):
                await self._send_error(ws, "unauthorized", "wrong or missing token")
                await ws.close(1008, "unauthorized")
                return False
        await ws.send(encode(self.metadata))
        return True

    async def _serve_requests(self, ws: ServerConnection, client: int, tasks: set[asyncio.Task]) -> None:
        limit = _RateLimit(self.config.rate_limit_per_s)
        async for frame in ws:
            t0 = time.perf_counter()
            rid = None
            try:
                msg = decode(frame, self.config.max_message_bytes)
                rid = msg.get("id")
                if msg["type"] != "infer":
                    raise ProtocolError("bad_request", f"unknown message type {msg['type'][:40]!r}; send 'infer'")
                if not limit.take():
                    raise ProtocolError("rate_limited", f"more than {self.config.rate_limit_per_s:g} requests/s")
                if len(tasks) >= self.config.max_in_flight:
                    raise ProtocolError("rate_limited", f"more than {self.config.max_in_flight} requests in flight")
                request = self.model.schema.validate(msg)
                if request.prefix is not None and not self.model.supports_rtc:
                    raise ProtocolError("bad_request", "this policy does not take a committed prefix (no RTC)")
            except ProtocolError as err:
                await self._send_error(ws, err.code, str(err), rid)
                continue
            task = asyncio.create_task(self._answer(ws, client, request, t0, time.perf_counter()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _answer(self, ws: ServerConnection, client: int, request: Any, t_recv: float, t_valid: float) -> None:
        try:
            await self._answer_or_raise(ws, client, request, t_recv, t_valid)
        except ConnectionClosed:
            pass  # the client left while its request was in flight: nobody to answer

    async def _answer_or_raise(self, ws: ServerConnection, client: int, request: Any, t_recv: float,
                               t_valid: float) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def done(result: Any, timings: dict[str, float]) -> None:  # on the inference thread
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result((result, timings)))

        deadline = t_recv + request.deadline_ms / 1e3
        job = Job(request, client, t_valid, deadline, done)
        try:
            self.batcher.submit(job)
            result, timings = await asyncio.wait_for(future, max(0.0, deadline - time.perf_counter()))
        except ProtocolError as err:
            return await self._send_error(ws, err.code, str(err), request.id)
        except TimeoutError:
            job.cancelled = True  # skipped if still queued; thrown away if the model is on it: never sent late
            return await self._send_error(ws, "timeout", f"no answer within {request.deadline_ms:g} ms", request.id)
        if isinstance(result, ProtocolError):
            return await self._send_error(ws, result.code, str(result), request.id)
        t_enc = time.perf_counter()
        action = pack_array(result)  # the array's bytes: what 'encode' reports
        timings = {"decode": 1e3 * (t_valid - t_recv), **timings, "encode": 1e3 * (time.perf_counter() - t_enc)}
        await ws.send(encode({"type": "action", "id": request.id, "action": action, "timings_ms": timings}))

    # --- running -------------------------------------------------------------------------------
    async def serve(self, started: threading.Event | None = None, stop: asyncio.Event | None = None) -> None:
        self.batcher.start()
        cfg = self.config
        async with serve(self.handle, cfg.host, cfg.port, process_request=self._process_request,
                         max_size=2 * cfg.max_message_bytes, compression=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            log.info("serving %s on ws://%s:%d (healthz: http://%s:%d/healthz)", self.metadata["policy"],
                     cfg.host, self.port, cfg.host, self.port)
            if started is not None:
                started.set()
            await (stop.wait() if stop is not None else asyncio.Future())
        self.batcher.close()

