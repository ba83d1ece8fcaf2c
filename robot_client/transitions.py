"""Timestamped action queues and how a new chunk takes over from the old one (numpy only).

Time is counted in control steps. A chunk predicted from the observation of step t holds the actions of
steps t, t+1, ...; it can only take over from the step its answer arrives at (t + delay). Modes:
  switch  the new chunk replaces the old from that step on (a jump at the boundary when they disagree)
  blend   over the steps both cover, old and new are mixed with the old's weight falling linearly to 0
  rtc     real-time chunking: the request carried the old chunk's remaining actions and the delay, the
          server guided the new chunk toward them (policies/rtc.py), so it replaces the old like switch
"""

from __future__ import annotations

import math

import numpy as np

TRANSITIONS = ("switch", "blend", "rtc")


def soft_prefix_weights(n_prefix: int, delay: int, length: int | None = None) -> np.ndarray:
    """Real-time chunking's guidance mask W [length] over a committed prefix of n_prefix actions: 1 for the
    `delay` actions that execute while the request is in flight; then c (e^c - 1) / (e - 1) with
    c = (n_prefix - i) / (n_prefix - delay + 1), an exponential fall toward 0 over the rest of the prefix
    (Black et al. 2025); 0 from n_prefix on. Every weight inside the prefix is > 0."""
    length = n_prefix if length is None else length
    if not 0 <= delay <= n_prefix <= length:
        raise ValueError(f"need 0 <= delay ({delay}) <= prefix length ({n_prefix}) <= chunk length ({length})")
    w = np.zeros(length, dtype=np.float32)
    w[:delay] = 1.0
    span = n_prefix - delay + 1
    for i in range(delay, n_prefix):
        c = (n_prefix - i) / span
        w[i] = c * math.expm1(c) / math.expm1(1.0)
    return w


def prefix_of_weights(weights: np.ndarray) -> tuple[int, int]:
    """(n_prefix, delay) back from a row of soft_prefix_weights (the remote policy sends these two)."""
    w = np.asarray(weights)
    return int((w > 0).sum()), int((w >= 1.0).sum())


class ActionQueue:
    """Actions keyed by control step: `actions[i]` is the action of step `start + i`."""

    def __init__(self, action_dim: int) -> None:
        self.start = 0
        self.actions = np.zeros((0, action_dim), dtype=np.float32)
        self.dropped_late = 0

    def remaining(self, t: int) -> np.ndarray:
        """The actions of steps t, t+1, ... (empty when none)."""
        return self.actions[max(0, t - self.start):]

    def pop(self, t: int) -> np.ndarray | None:
        """The action of step t; actions of earlier steps not taken by now are dropped (late)."""
        skip = t - self.start
        if skip > 0:
            self.dropped_late += min(skip, len(self.actions))
        if skip >= len(self.actions) or skip < 0:
            if skip >= len(self.actions):
                self.actions, self.start = self.actions[:0], t
            return None
        action = self.actions[skip]
        self.actions, self.start = self.actions[skip + 1:], t + 1
        return action

    def merge(self, chunk: np.ndarray, chunk_step: int, from_step: int, mode: str) -> None:
        """Take `chunk` (actions of steps chunk_step, ...) over from step `from_step` on; earlier steps keep
        the old actions."""
        if mode not in TRANSITIONS:
            raise ValueError(f"unknown transition {mode!r}; choose one of {', '.join(TRANSITIONS)}")
        new = np.asarray(chunk, dtype=np.float32)[max(0, from_step - chunk_step):]
        keep = self.actions[: max(0, from_step - self.start)] if from_step > self.start else self.actions[:0]
        old = self.remaining(from_step)
        if mode == "blend" and len(old) and len(new):
            k = min(len(old), len(new))
            w_old = ((k - np.arange(k)) / (k + 1))[:, None].astype(np.float32)
            new = np.concatenate([w_old * old[:k] + (1 - w_old) * new[:k], new[k:]])
        start = self.start if len(keep) else from_step
        gap = from_step - (start + len(keep))
        if gap > 0:  # the old chunk ends before the new one arrives: the robot holds its last old action
            keep = np.concatenate([keep, np.repeat(keep[-1:], gap, axis=0)])
        self.start, self.actions = start, np.concatenate([keep, new])
