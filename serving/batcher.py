"""Micro-batching inference off the event loop: one thread owns the model; requests from every client
wait in one bounded queue; the thread takes the oldest, gathers up to `max_batch` that arrive within
`batch_wait_ms` (only while another client is connected: a lone client has no one to share a batch with,
so its request runs at once), drops those whose client left or whose deadline passed, and answers each
through its own callback. The event loop only appends and cancels (under a lock held for microseconds).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from robot_client.protocol import ProtocolError
from serving.schema import ValidRequest

log = logging.getLogger("serve")


@dataclass
class Job:
    request: ValidRequest
    client: int  # the connection's id: its jobs are dropped when it closes
    received: float  # time.perf_counter() at receipt
    deadline: float  # time.perf_counter() after which no answer is sent
    done: Callable[[Any, dict[str, float]], None]  # (array | ProtocolError, timings_ms); thread-safe
    cancelled: bool = False
    timings: dict[str, float] = field(default_factory=dict)


class Batcher:
    def __init__(self, model: Any, max_batch: int, batch_wait_ms: float, max_queue: int) -> None:
        if max_batch < 1 or batch_wait_ms < 0 or max_queue < 1:
            raise ValueError("need max_batch >= 1, batch_wait_ms >= 0 and max_queue >= 1")
        self.model, self.max_batch, self.batch_wait_s, self.max_queue = model, max_batch, batch_wait_ms / 1e3, max_queue
        self.ready = threading.Event()  # set after the warm-up call
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._clients = 0  # connected clients (client_opened / client_closed): waiting pays only with two or more
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self.batch_sizes: list[int] = []  # for tests and benchmarks: the size of every batch run

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def submit(self, job: Job) -> None:
        with self._cond:
            if len(self._queue) >= self.max_queue:
                raise ProtocolError("overloaded", f"the server's queue is full ({self.max_queue}); retry later")
            self._queue.append(job)
            self._cond.notify()

    def client_opened(self) -> None:
        with self._cond:
            self._clients += 1

    def cancel_client(self, client: int) -> int:
        """`client` disconnected: drop every queued job of it; returns how many."""
        with self._cond:
            self._clients -= 1
            mine = [j for j in self._queue if j.client == client]
            for j in mine:
                j.cancelled = True
                self._queue.remove(j)
        return len(mine)

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    # --- the inference thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.model.warm_up()
        except Exception as err:  # a model that cannot run: say so once, and answer every request 'internal'
            log.error("warm-up failed: %s", str(err).splitlines()[0] if str(err) else type(err).__name__)
        self.ready.set()
        while True:
            batch = self._gather()
            if batch is None:
                return
            if batch:
                self._answer(batch)

    def _gather(self) -> list[Job] | None:
        with self._cond:
            while not self._queue and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            batch = [self._queue.popleft()]
            until = time.perf_counter() + (self.batch_wait_s if self._clients > 1 else 0.0)
            while len(batch) < self.max_batch:
                if self._queue:
                    batch.append(self._queue.popleft())
                    continue
                left = until - time.perf_counter()
                if left <= 0 or self._stop:
                    break
                self._cond.wait(left)
        now = time.perf_counter()
        live = []
        for j in batch:
            if j.cancelled:
                continue
            if now >= j.deadline:
                j.done(ProtocolError("timeout", "the deadline passed while the request waited in the queue"),
                       {"queue": 1e3 * (now - j.received)})
                continue
            live.append(j)
        return live

    def _answer(self, batch: list[Job]) -> None:
        t0 = time.perf_counter()
        try:
            actions = self.model.predict([j.request for j in batch])
        except Exception as err:  # the message only: a traceback never leaves the server
            log.error("inference failed on a batch of %d: %s", len(batch), type(err).__name__)
            for j in batch:
                j.done(ProtocolError("internal", f"the model failed on this request ({type(err).__name__})"), {})
            return
        t1 = time.perf_counter()
        self.batch_sizes.append(len(batch))
        for j, action in zip(batch, actions):
            j.done(action, {"queue": 1e3 * (t0 - j.received), "model": 1e3 * (t1 - t0), "batch": len(batch)})
