"""The control loop's side of chunked policies: an action for every tick, new chunks asked for early.

    client = PolicyClient("ws://127.0.0.1:8765")
    scheduler = ActionScheduler(client, transition="rtc", task=0)
    while running:
        action = scheduler.act(obs_history)    # {key: [n_obs_steps, ...]} -> [action_dim] (never blocks
        robot.apply(action)                    #  after the first chunk)
        sleep_until_next_tick()

Each action is timestamped (control step = (clock - start) * control rate); an action whose step has
passed is dropped, never executed late. When the queue holds `threshold` actions or fewer (default: the
estimated delay in steps + 1), the next request goes out on a background thread; its chunk takes over as
its transition says (robot_client/transitions.py). With no action for a step (server away, the robot
reconnecting) the last action is repeated (`on_empty="repeat"`) or None returned (`"none"`: the robot's
own controller holds).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from robot_client.transitions import TRANSITIONS, ActionQueue


class ActionScheduler:
    def __init__(self, client: Any, transition: str = "rtc", task: int | None = None, instruction: str | None = None,
                 threshold: int | None = None, control_rate_hz: float | None = None, on_empty: str = "repeat",
                 clock: Callable[[], float] = time.monotonic, deadline_s: float | None = None) -> None:
        if transition not in TRANSITIONS:
            raise ValueError(f"unknown transition {transition!r}; choose one of {', '.join(TRANSITIONS)}")
        if on_empty not in ("repeat", "none"):
            raise ValueError("on_empty must be 'repeat' or 'none'")
        meta = client.metadata
        self.client, self.transition, self.task, self.instruction = client, transition, task, instruction
        self.threshold, self.on_empty, self.clock, self.deadline_s = threshold, on_empty, clock, deadline_s
        self.dt = 1.0 / float(control_rate_hz or meta["control_rate_hz"])
        self.max_prefix = int(meta.get("max_prefix", meta["n_action_steps"]))
        if transition == "rtc" and not meta.get("rtc", False):
            raise ValueError("this server's policy does not take a committed prefix; use transition='blend'")
        self.queue = ActionQueue(int(meta["action_dim"]))
        self.t0: float | None = None
        self.delay_s = 0.0  # smoothed round trip, from the answers so far
        self.last_action: np.ndarray | None = None
        self.errors: list[str] = []  # one line per failed request (the loop goes on holding)
        self._lock = threading.Lock()
        self._in_flight: threading.Thread | None = None
        self._arrived: tuple[np.ndarray, int] | None = None  # (chunk, step of its observation)

    def step_now(self) -> int:
        return int(math.floor((self.clock() - self.t0) / self.dt + 1e-9))

    def delay_steps(self) -> int:
        return int(math.ceil(self.delay_s / self.dt))

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        if self.t0 is None:  # the first chunk: the robot waits for it
            self.t0 = self.clock()
            self._request(obs, 0, None, 0)
            self.t0 = self.clock()  # the first chunk starts now, not when it was asked for
            self._take_arrival(0, first=True)
        t = self.step_now()
        self._take_arrival(t)
        left = len(self.queue.remaining(t))
        threshold = self.threshold if self.threshold is not None else self.delay_steps() + 1
        if left <= threshold and (self._in_flight is None or not self._in_flight.is_alive()):
            prefix = self.queue.remaining(t)[: self.max_prefix] if self.transition == "rtc" else None
            delay = min(self.delay_steps(), len(prefix)) if prefix is not None else 0
            self._in_flight = threading.Thread(target=self._request, args=(obs, t, prefix, delay), daemon=True)
            self._in_flight.start()
        action = self.queue.pop(t)
        if action is None:
            return self.last_action if self.on_empty == "repeat" else None
        self.last_action = action
        return action

    def _request(self, obs: dict[str, np.ndarray], step: int, prefix: np.ndarray | None, delay: int) -> None:
        sent = time.monotonic()
        try:
            chunk = self.client.infer(obs, task=self.task, instruction=self.instruction, deadline_s=self.deadline_s,
                                      prefix=prefix if prefix is not None and len(prefix) else None,
                                      delay_steps=delay)
        except Exception as err:  # the loop keeps holding; the next request tries again
            with self._lock:
                self.errors.append(str(err).splitlines()[0] if str(err) else type(err).__name__)
            return
        rtt = time.monotonic() - sent
        with self._lock:
            self.delay_s = rtt if self.delay_s == 0 else 0.8 * self.delay_s + 0.2 * rtt
            self._arrived = (chunk, step)

    def _take_arrival(self, t: int, first: bool = False) -> None:
        with self._lock:
            arrived, self._arrived = self._arrived, None
        if arrived is not None:
            chunk, step = arrived
            self.queue.merge(chunk, 0 if first else step, 0 if first else t, self.transition)
