"""The server on 127.0.0.1 ephemeral ports: handshake, token and binding rules, batching, disconnects,
deadlines and request ids, reconnects, and a connection that stays usable after bad frames."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.sync.client import connect

from robot_client import PolicyClient, ServerError
from robot_client.protocol import PROTOCOL_VERSION, decode, encode
from serving.model import ServeError
from serving.schema import KeySpec, ObsSchema
from serving.server import ServerConfig
from serving.thread import ServerThread

TOKEN = "a-test-token-of-24-chars"
SCHEMA = ObsSchema({"state": KeySpec((4,), "float32")}, n_obs_steps=2, action_dim=2, horizon=8, n_action_steps=4,
                   tasks=("a",), instructions=("do a",))


class SlowModel:
    """predict sleeps `delay_s` and answers each request with its own observation's first value."""

    schema, model_hash, supports_rtc = SCHEMA, "0123456789abcdef", True

    class policy:  # noqa: N801
        name = "slow"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s, self.calls = delay_s, []

    def warm_up(self) -> None:
        pass

    def predict(self, requests):
        self.calls.append(len(requests))
        time.sleep(self.delay_s)
        return [np.full((4, 2), r.obs["state"][0, 0], np.float32) for r in requests]


def obs(value: float = 0.0) -> dict:
    return {"state": np.full((2, 4), value, np.float32)}


def server(model=None, **config) -> ServerThread:
    return ServerThread(model or SlowModel(), ServerConfig(port=0, **config))


def test_handshake_metadata_and_an_answer() -> None:
    with server() as s, PolicyClient(s.url) as c:
        m = c.metadata
        assert m["protocol"] == PROTOCOL_VERSION and m["model_hash"] == "0123456789abcdef"
        assert (m["n_obs_steps"], m["action_dim"], m["horizon"], m["n_action_steps"]) == (2, 2, 8, 4)
        assert m["obs"] == {"state": {"shape": [4], "dtype": "float32"}} and m["tasks"][0]["instruction"] == "do a"
        assert np.array_equal(c.infer(obs(3.0)), np.full((4, 2), 3.0, np.float32))
        assert set(c.last_timings) >= {"decode", "queue", "model", "encode"}
        with urllib.request.urlopen(f"http://127.0.0.1:{s.port}/healthz", timeout=5) as r:
            assert r.status == 200


def test_binding_beyond_loopback_needs_a_long_token() -> None:
    with pytest.raises(ServeError, match="token"):
        ServerConfig(host="0.0.0.0").check()
    with pytest.raises(ServeError, match="16 characters"):
        ServerConfig(host="0.0.0.0", token="short").check()
    ServerConfig(host="0.0.0.0", token=TOKEN).check()
    ServerConfig(host="::1").check()


def test_wrong_token_and_wrong_protocol_close_the_connection() -> None:
    with server(token=TOKEN) as s:
        with pytest.raises(ServerError) as err:
            PolicyClient(s.url, token="not-the-token-at-all!!")
        assert err.value.code == "unauthorized"
        with pytest.raises(ServerError) as err:
            PolicyClient(s.url)
        assert err.value.code == "unauthorized"
        with connect(s.url) as ws:
            ws.send(encode({"type": "hello", "protocol": PROTOCOL_VERSION + 1, "token": TOKEN}))
            assert decode(ws.recv(timeout=5))["code"] == "bad_protocol"
        with PolicyClient(s.url, token=TOKEN) as c:
            assert c.infer(obs(1.0))[0, 0] == 1.0


def test_bad_frames_get_typed_errors_and_the_connection_stays_usable() -> None:
    with server(max_message_bytes=4096) as s, connect(s.url) as ws:
        ws.send(encode({"type": "hello", "protocol": PROTOCOL_VERSION}))
        decode(ws.recv(timeout=5))
        cases = [b"\x93\x01", b"junk", encode({"type": "infer", "id": 5, "deadline_ms": 100, "obs": {}}),
                 encode({"type": "hello"}), b"\x00" * 5000,
                 encode({"type": "infer", "id": 6, "deadline_ms": 100,
                         "obs": {"state": np.full((2, 4), np.nan, np.float32)}})]
        codes = []
        for frame in cases:
            ws.send(frame)
            codes.append(decode(ws.recv(timeout=5))["code"])
        assert codes == ["bad_frame", "bad_frame", "bad_observation", "bad_request", "too_large", "bad_observation"]
        ws.send(encode({"type": "infer", "id": 7, "deadline_ms": 1000, "obs": obs(2.0)}))
        reply = decode(ws.recv(timeout=5))
        assert reply["type"] == "action" and reply["id"] == 7


def test_requests_of_several_clients_are_batched() -> None:
    model = SlowModel(delay_s=0.05)
    with server(model, max_batch=4, batch_wait_ms=30) as s:
        clients = [PolicyClient(s.url) for _ in range(4)]
        results = {}
        threads = [threading.Thread(target=lambda i=i: results.update({i: clients[i].infer(obs(i))}))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert {i: float(a[0, 0]) for i, a in results.items()} == {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}
        assert max(s.server.batcher.batch_sizes) > 1  # each client got its own answer out of a shared batch
        for c in clients:
            c.close()


def test_a_lone_client_does_not_wait_for_a_batch() -> None:
    with server(SlowModel(), batch_wait_ms=5_000) as s, PolicyClient(s.url) as c:
        c.infer(obs(1.0))  # the first request of a connection
        t0 = time.perf_counter()
        c.infer(obs(2.0))
        assert time.perf_counter() - t0 < 2.5  # far below the 5 s a batch would wait with company
        assert c.last_timings["queue"] < 2_500


def test_a_late_answer_is_a_timeout_never_another_requests_answer() -> None:
    with server(SlowModel(delay_s=0.3)) as s, PolicyClient(s.url) as c:
        with pytest.raises(ServerError) as err:
            c.infer(obs(1.0), deadline_s=0.1)
        assert err.value.code == "timeout"
        answer = c.infer(obs(2.0), deadline_s=5.0)  # the first one's late reply (if any) is not taken for this
        assert answer[0, 0] == 2.0


def test_a_disconnected_clients_queued_work_is_dropped() -> None:
    model = SlowModel(delay_s=0.2)
    with server(model, max_batch=1) as s:
        busy = PolicyClient(s.url)
        ws = connect(s.url, legacy=True)
        ws.send(encode({"type": "hello", "protocol": PROTOCOL_VERSION}))
        decode(ws.recv(timeout=5))
        threading.Thread(target=lambda: busy.infer(obs(0.0), deadline_s=5), daemon=True).start()
        time.sleep(0.05)  # the model is on busy's request; the next ones queue
        for i in range(3):
            ws.send(encode({"type": "infer", "id": i + 1, "deadline_ms": 5000, "obs": obs(9.0)}))
        time.sleep(0.05)
        ws.close()
        deadline = time.monotonic() + 1.0
        while s.server.batcher.queued() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s.server.batcher.queued() == 0
        time.sleep(0.3)
        assert sum(model.calls) <= 2  # busy's request, and at most one of the dropped ones already started
        busy.close()


def test_client_reconnects_after_a_server_restart() -> None:
    first = server().start()
    port = first.port
    c = PolicyClient(first.url, deadline_s=5.0)
    assert c.infer(obs(1.0))[0, 0] == 1.0
    first.stop()
    second = ServerThread(SlowModel(), ServerConfig(port=port))
    threading.Timer(0.3, second.start).start()  # comes back while the client is retrying
    try:
        assert c.infer(obs(4.0))[0, 0] == 4.0
        assert c.reconnects >= 1
    finally:
        c.close()
        time.sleep(0.1)
        second.stop()


def test_rate_and_in_flight_limits() -> None:
    with server(rate_limit_per_s=3) as s, connect(s.url) as ws:
        ws.send(encode({"type": "hello", "protocol": PROTOCOL_VERSION}))
        decode(ws.recv(timeout=5))
        for i in range(6):
            ws.send(encode({"type": "infer", "id": i, "deadline_ms": 1000, "obs": obs()}))
        replies = [decode(ws.recv(timeout=5)) for _ in range(6)]
        assert sum(r.get("code") == "rate_limited" for r in replies) >= 2
        assert sorted(r["id"] for r in replies) == list(range(6))


def test_healthz_is_unavailable_until_warm() -> None:
    class ColdModel(SlowModel):
        def warm_up(self):
            time.sleep(0.5)

    s = ServerThread(ColdModel(), ServerConfig(port=0))
    s._thread.start()
    s._started.wait(5)
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{s.port}/healthz", timeout=5)
        assert err.value.code == 503
        err.value.close()
        s.server.batcher.ready.wait(5)
        with urllib.request.urlopen(f"http://127.0.0.1:{s.port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        s.stop()
