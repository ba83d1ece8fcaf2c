"""Inference delay simulated in environment time (eval_rollouts.py latency_ms=, transition=).

A robot keeps moving while its next chunk is computed. Here, a chunk asked for at step t (from the
observation of step t) takes over only at step t + delay, delay = round(latency_ms * control rate): the
env executes the old chunk's remaining actions meanwhile (or repeats the last action when none are left),
and the next request goes out after n_action_steps - delay actions (the execution horizon n_action_steps
may be shorter than the policy's chunk: the old chunk's actions past it are what blend and rtc overlap
with the new one). The chunk is computed at once and merged in
the future, which is the same as waiting for it in real time, and keeps the run deterministic.
Transitions are robot_client/transitions.py's, the ones the robot's ActionScheduler uses; with `rtc` the
policy is given the committed actions (prefix) and the guidance mask over the delay.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robot_client.transitions import TRANSITIONS, ActionQueue, soft_prefix_weights


class LatencySim:
    def __init__(self, delay_steps: int, transition: str, n_action_steps: int) -> None:
        if transition not in TRANSITIONS:
            raise ValueError(f"unknown transition {transition!r}; choose one of {', '.join(TRANSITIONS)}")
        if delay_steps < 0:
            raise ValueError("latency must be >= 0")
        self.delay, self.transition, self.n_action_steps = int(delay_steps), transition, int(n_action_steps)
        self._queues: dict[int, ActionQueue] = {}
        self._t: dict[int, int] = {}
        self._last: dict[int, np.ndarray] = {}
        self.boundary_steps: dict[int, list[int]] = {}  # per episode: the steps where a new chunk took over
        self._sent: dict[int, list[np.ndarray]] = {}  # per episode: every action sent, in step order

    @classmethod
    def from_options(cls, latency_ms: float, control_rate_hz: float, transition: str,
                     n_action_steps: int) -> LatencySim:
        return cls(round(float(latency_ms) * float(control_rate_hz) / 1e3), transition, n_action_steps)

    def policy_kwargs(self, episodes: list[int], action_dim: int, device: Any) -> dict[str, Any]:
        """rtc: the committed prefix of each episode (from its current step on) and its guidance mask."""
        if self.transition != "rtc":
            return {}
        rows = [self._queues[i].remaining(self._t[i]) if i in self._queues else None for i in episodes]
        n = max((len(r) for r in rows if r is not None), default=0)
        if n == 0:
            return {}
        prefix = np.zeros((len(rows), n, action_dim), dtype=np.float32)
        weights = np.zeros((len(rows), n), dtype=np.float32)
        for k, r in enumerate(rows):
            if r is not None and len(r):
                prefix[k, : len(r)] = r
                weights[k] = soft_prefix_weights(len(r), min(self.delay, len(r)), n)
        return {"prefix": torch.from_numpy(prefix).to(device), "prefix_weights": torch.from_numpy(weights).to(device)}

    def actions(self, episode: int, chunk: np.ndarray) -> np.ndarray:
        """The actions episode `episode` executes until its next request, given the chunk just computed."""
        queue = self._queues.setdefault(episode, ActionQueue(chunk.shape[-1]))
        t = self._t.get(episode, 0)
        first = t == 0  # the robot waits for its first chunk
        take_over = t if first else t + self.delay
        queue.merge(chunk, t, take_over, self.transition)
        self.boundary_steps.setdefault(episode, []).append(take_over)
        n = max(1, self.n_action_steps - self.delay)  # the next request goes out while `delay` actions remain
        out = []
        for step in range(t, t + n):
            action = queue.pop(step)
            action = self._last.get(episode, np.zeros_like(chunk[0])) if action is None else action
            self._last[episode] = action
            out.append(action)
        self._t[episode] = t + n
        self._sent.setdefault(episode, []).extend(out)
        return np.stack(out)

    def summary(self) -> dict[str, Any]:
        """How smooth the chunk boundaries were: max_d |a_t - a_(t-1)| at the steps where a new chunk took over,
        against the same within chunks (over the actions sent; an episode may end before its last ones)."""
        at_boundary, within = [], []
        for episode, sent in self._sent.items():
            if len(sent) < 2:
                continue
            jumps = np.abs(np.diff(np.stack(sent), axis=0)).max(axis=1)  # jumps[i]: step i+1 vs step i
            boundaries = {b for b in self.boundary_steps.get(episode, []) if 0 < b < len(sent)}
            for i, jump in enumerate(jumps):
                (at_boundary if i + 1 in boundaries else within).append(float(jump))
        out: dict[str, Any] = {"mode": self.transition, "delay_steps": self.delay}
        if at_boundary and within:
            out.update(boundary_jump_p50=float(np.median(at_boundary)), boundary_jump_max=float(max(at_boundary)),
                       within_chunk_p99=float(np.percentile(within, 99)))
        return out
