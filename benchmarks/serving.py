"""Policy server benchmark (JSON lines): what the network path costs on top of the model, batching across
clients, /healthz under load, and a fuzz run of malformed frames.

    python -m benchmarks.serving [--quick] [--save]     # -> benchmarks/results/serving-cpu.jsonl

The server is `python serve.py` in a process of its own (threads=1) on 127.0.0.1; the clients run here.
- overhead: per request, the client's round trip minus the model time the server measured for that request
  (decode, queue, encode, the WebSocket and both msgpack codecs); and, on the same input in this process,
  the bare predict_action, interleaved with the round trips. State obs (Lift-shaped) and two 84x84 cameras
  x 2 frames + state, the default MoDE config.
- batching: chunks/s of 4 concurrent clients against 1, and each client's p99 against the solo p99.
- healthz: p99 of GET /healthz while 4 clients keep the model busy.
- fuzz: >= 10,000 malformed frames (random bytes, truncations, wrong dtypes/shapes, NaN, huge declared shapes,
  oversized, wrong protocol version, bad token); every one must get a typed error or, past the hard frame
  limit, a closed connection; a well-behaved client alongside must keep getting answers; server RSS growth.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import msgpack
import numpy as np
import torch

from benchmarks.common import LIFT_ACTION_DIM, LIFT_STATE, Recorder
from data.normalize import Normalizer
from policies.base import Policy
from robot_client import PolicyClient, ServerError
from robot_client.protocol import ARRAY_EXT, PROTOCOL_VERSION, decode, encode
from serving.model import ServedModel
from serving.schema import ValidRequest

REPO = Path(__file__).resolve().parents[1]
TOKEN = "benchmark-token-0123456789"
CAP = 1 << 20  # the server's message cap in this benchmark


def checkpoint(path: Path, cameras: bool) -> Path:
    rng = np.random.default_rng(0)
    arrays = {k: rng.normal(size=(64, d)).astype(np.float32) for k, d in LIFT_STATE.items()}
    arrays["action"] = rng.uniform(-1, 1, size=(64, LIFT_ACTION_DIM)).astype(np.float32)
    modes = {k: "limits" for k in arrays}
    obs = {k: {"shape": [d], "type": "low_dim"} for k, d in LIFT_STATE.items()}
    if cameras:
        for cam in ("agentview_image", "robot0_eye_in_hand_image"):
            arrays[cam] = np.zeros((1, 84, 84, 3), np.uint8)
            modes[cam] = "image"
            obs[cam] = {"shape": [84, 84, 3], "type": "rgb"}
    shape_meta = {"obs": obs, "action": {"shape": [LIFT_ACTION_DIM]}, "n_tasks": 1, "lang_dim": 0}
    torch.manual_seed(0)
    policy = Policy.build("mode", {}, shape_meta, Normalizer.fit(arrays, modes))
    torch.save({"policy": policy.checkpoint_dict(), "dataset": {"tasks": [{"name": "lift", "instruction": "lift"}]}},
               path)
    return path


class Server:
    def __init__(self, ckpt: Path, port: int, **cfg: object) -> None:
        args = [f"checkpoint={ckpt}", f"port={port}", "threads=1", f"token={TOKEN}",
                f"max_message_bytes={CAP}", *(f"{k}={v}" for k, v in cfg.items())]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, str(REPO / "serve.py"), *args], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
        self.url, self.health = f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}/healthz"
        for _ in range(600):
            try:
                with urllib.request.urlopen(self.health, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve.py exited: {self.proc.stderr.read().decode()[-500:]}")
            time.sleep(0.1)
        raise RuntimeError("serve.py did not become ready")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def observation(meta: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.integers(0, 256, (meta["n_obs_steps"], *v["shape"]), dtype=np.uint8) if v["dtype"] == "uint8"
                else rng.normal(size=(meta["n_obs_steps"], *v["shape"])).astype(np.float32))
            for k, v in meta["obs"].items()}


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


# --- overhead -----------------------------------------------------------------------------------
def overhead(rec: Recorder, case: str, ckpt: Path, n: int) -> None:
    server = Server(ckpt, free_port())
    try:
        local = ServedModel.load(ckpt)
        client = PolicyClient(server.url, TOKEN, deadline_s=30)
        obs = observation(client.metadata)
        request = ValidRequest(0, 1.0, obs, 0)
        rtt, model, bare, stages = [], [], [], []
        for i in range(n + 3):  # interleaved: a round trip, then the bare model on the same input here
            t0 = time.perf_counter()
            client.infer(obs, task=0)
            t1 = time.perf_counter()
            local.predict([request])
            t2 = time.perf_counter()
            if i >= 3:
                rtt.append(1e3 * (t1 - t0))
                model.append(client.last_timings["model"])
                stages.append(client.last_timings)
                bare.append(1e3 * (t2 - t1))
        per_request = [r - m for r, m in zip(rtt, model)]
        ctx = {"n": n, "obs_bytes": int(sum(a.nbytes for a in obs.values()))}
        for q in (50, 99):
            rec.emit(f"{case}-overhead", f"p{q}_ms", pct(per_request, q), "ms",
                     what="round trip - server model time", **ctx)
            rec.emit(f"{case}-round-trip", f"p{q}_ms", pct(rtt, q), "ms", **ctx)
            rec.emit(f"{case}-bare-predict", f"p{q}_ms", pct(bare, q), "ms", **ctx)
            rec.emit(f"{case}-round-trip-minus-bare", f"p{q}_ms", pct(rtt, q) - pct(bare, q), "ms", **ctx)
        for stage in ("decode", "queue", "encode"):
            rec.emit(f"{case}-server-{stage}", "p50_ms", statistics.median(t[stage] for t in stages), "ms", **ctx)
        client.close()
    finally:
        server.stop()


# --- batching and healthz -----------------------------------------------------------------------
def clients_run(url: str, n_clients: int, per_client: int, obs: dict) -> tuple[float, list[list[float]]]:
    clients = [PolicyClient(url, TOKEN, deadline_s=60) for _ in range(n_clients)]
    lat: list[list[float]] = [[] for _ in clients]
    barrier = threading.Barrier(n_clients + 1)

    def work(i: int) -> None:
        barrier.wait()
        for _ in range(per_client):
            t0 = time.perf_counter()
            clients[i].infer(obs, task=0)
            lat[i].append(1e3 * (time.perf_counter() - t0))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for c in clients:
        c.close()
    return n_clients * per_client / elapsed, lat


def batching(rec: Recorder, ckpt: Path, n: int) -> None:
    server = Server(ckpt, free_port(), max_batch=8, batch_wait_ms=2.0)
    try:
        with PolicyClient(server.url, TOKEN) as probe:
            obs = observation(probe.metadata)
        clients_run(server.url, 1, 3, obs)  # warm
        solo_rate, solo = clients_run(server.url, 1, n, obs)
        health: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                with urllib.request.urlopen(server.health, timeout=5) as r:
                    r.read()
                health.append(1e3 * (time.perf_counter() - t0))
                time.sleep(0.01)

        poller = threading.Thread(target=poll)
        poller.start()
        multi_rate, multi = clients_run(server.url, 4, n, obs)
        stop.set()
        poller.join()
        solo_p99 = pct(solo[0], 99)
        rec.emit("1-client", "chunks_per_s", solo_rate, "1/s", n=n)
        rec.emit("4-clients", "chunks_per_s", multi_rate, "1/s", n=n, max_batch=8, batch_wait_ms=2.0)
        rec.ratio("4-clients_vs_1-client", "throughput_ratio", multi_rate / solo_rate)
        rec.emit("1-client", "p99_ms", solo_p99, "ms")
        worst = max(pct(lat, 99) for lat in multi)
        rec.emit("4-clients-worst", "p99_ms", worst, "ms")
        rec.ratio("4-clients-worst-p99_vs_1-client-p99", "latency_ratio", worst / solo_p99)
        rec.emit("healthz-under-4-clients", "p99_ms", pct(health, 99), "ms", n=len(health))
        rec.emit("healthz-under-4-clients", "p50_ms", pct(health, 50), "ms", n=len(health))
    finally:
        server.stop()


# --- fuzz -----------------------------------------------------------------------------------------
def malformed_frames(meta: dict, rng: random.Random) -> list[tuple[str, bytes]]:
    good = {"type": "infer", "id": 1, "deadline_ms": 1000.0, "task": 0, "obs": observation(meta)}
    frame = encode(good)
    key = next(iter(meta["obs"]))
    shape = [meta["n_obs_steps"], *meta["obs"][key]["shape"]]

    def with_obs(arr):
        return encode({**good, "obs": {**good["obs"], key: arr}})

    def ext(dtype, shp, raw):
        return msgpack.packb({**{k: v for k, v in good.items() if k != "obs"},
                              "obs": {key: msgpack.ExtType(ARRAY_EXT, msgpack.packb([dtype, shp, raw]))}})

    kinds = [
        ("random_bytes", lambda: rng.randbytes(rng.randint(1, 2000))),
        ("truncated", lambda: frame[: rng.randint(1, len(frame) - 1)]),
        ("bit_flip", lambda: bytes(b ^ (1 << rng.randint(0, 7)) if rng.random() < 0.01 else b for b in frame)),
        ("wrong_dtype", lambda: with_obs(np.zeros(shape, np.float64))),
        ("wrong_shape", lambda: with_obs(np.zeros([shape[0] + 1, *shape[1:]], np.float32))),
        ("nan", lambda: with_obs(np.full(shape, np.nan, np.float32))),
        ("huge_declared_shape", lambda: ext("<f4", [2**31, 2**31, 2**31], b"\0" * 16)),
        ("object_dtype", lambda: ext("|O", [1], b"\0" * 8)),
        ("oversized", lambda: b"\x00" * (CAP + 1)),
        ("not_a_map", lambda: msgpack.packb([1, 2, 3])),
        ("bad_fields", lambda: encode({**good, "id": "x", "deadline_ms": -1})),
    ]
    return [(name, make()) for name, make in kinds]


def fuzz(rec: Recorder, ckpt: Path, n_frames: int) -> None:
    server = Server(ckpt, free_port(), rate_limit_per_s=1e9, max_connections_per_client=64)
    try:
        bystander = PolicyClient(server.url, TOKEN, deadline_s=30)
        obs = observation(bystander.metadata)
        bystander.infer(obs, task=0)
        rss0 = server.rss_mb()
        rng = random.Random(0)
        from websockets.sync.client import connect

        def connection():
            ws = connect(server.url, max_size=None, legacy=True)
            ws.send(encode({"type": "hello", "protocol": PROTOCOL_VERSION, "token": TOKEN}))
            decode(ws.recv(timeout=10))
            return ws

        ws, sent, typed, codes, bystander_ok, bystander_tries, still_valid = connection(), 0, 0, {}, 0, 0, 0
        rounds = 0
        while sent < n_frames:
            rounds += 1
            for _name, frame in malformed_frames(bystander.metadata, rng):
                ws.send(frame)
                reply = decode(ws.recv(timeout=30))
                if reply.get("type") == "action":  # a bit flip that left a valid request: not malformed
                    still_valid += 1
                    continue
                sent += 1
                if reply.get("type") == "error" and reply.get("code"):
                    typed += 1
                    codes[reply["code"]] = codes.get(reply["code"], 0) + 1
            if rounds % 50 == 1:  # now and then: handshake faults on fresh connections, and the bystander
                for hello in ({"type": "hello", "protocol": PROTOCOL_VERSION + 7, "token": TOKEN},
                              {"type": "hello", "protocol": PROTOCOL_VERSION, "token": "wrong-token-xxxxxxxxxx"}):
                    with connect(server.url, legacy=True) as bad:
                        bad.send(encode(hello))
                        code = decode(bad.recv(timeout=10)).get("code")
                        sent += 1
                        typed += code in ("bad_protocol", "unauthorized")
                        codes[code] = codes.get(code, 0) + 1
                bystander_tries += 1
                try:
                    bystander.infer(obs, task=0)
                    bystander_ok += 1
                except ServerError:
                    pass
        ws.close()
        alive = server.proc.poll() is None
        rss1 = server.rss_mb()
        rec.emit("fuzz", "frames", sent, "", codes=codes, mutations_still_valid=still_valid)
        rec.emit("fuzz", "typed_error_fraction", typed / sent, "", server_alive=alive)
        rec.emit("fuzz", "bystander_answers", bystander_ok, "", of=bystander_tries)
        rec.emit("fuzz", "rss_growth_mb", rss1 - rss0, "MB", rss_before_mb=round(rss0, 1))
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few requests per case (seconds)")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/serving-cpu.jsonl")
    parser.add_argument("--table", action="store_true", help="print the committed results as a markdown table")
    args = parser.parse_args()
    if args.table:
        return print_table()
    torch.set_num_threads(1)
    rec = Recorder("serving", "cpu", save=args.save)
    n = 10 if args.quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        state = checkpoint(Path(tmp) / "state.ckpt", cameras=False)
        cams = checkpoint(Path(tmp) / "cams.ckpt", cameras=True)
        overhead(rec, "state", state, n)
        overhead(rec, "2cams-84x84", cams, n // 2)
        batching(rec, state, n // 2 if not args.quick else 5)
        fuzz(rec, state, 550 if args.quick else 11_000)
    path = rec.write()
    if path:
        print(f"# wrote {path}")


def print_table(path: Path = REPO / "benchmarks" / "results" / "serving-cpu.jsonl") -> None:
    """The committed results as docs/deploy.md shows them."""
    import json

    print("| case | metric | value |\n|---|---|---|")
    for line in path.read_text().splitlines():
        r = json.loads(line)
        extra = f" ({r['codes']})" if "codes" in r else ""
        print(f"| {r['case']} | {r['metric']} | {r['value']:.3g} {r['unit']}{extra} |")


if __name__ == "__main__":
    main()
