"""Windows over episodes: which rows form each training sample, and which of them are padding.

A window of `horizon` (T) steps starts `n_obs_steps - 1` (To - 1) steps before the
"current" step: its first To rows are the observations, all T rows are actions, and the
actions a controller executes are rows [To-1, To-1+Ta). Windows may reach past the start of
an episode by To-1 rows and past its end by Ta-1 rows; those rows repeat the edge frame and
are flagged in the `*_is_pad` masks, never silently.

    episode:        |e0 e1 e2 ... eL-1|
    window (To=2):  [p  e0 e1 ... ]       p = edge-padded copy of e0, flagged
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_episodes(
    n_episodes: int, val_ratio: float = 0.1, seed: int = 0, max_train_episodes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reproducible train/val split by episode; optionally cap the number of training episodes."""
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    if n_episodes < 1:
        raise ValueError("cannot split a store with no episodes")
    order = np.random.default_rng(seed).permutation(n_episodes)
    # Keep at least one training episode; use a validation episode only when asked for one.
    n_val = min(int(round(n_episodes * val_ratio)), n_episodes - 1)
    if val_ratio > 0 and n_val == 0 and n_episodes > 1:
        n_val = 1
    val, train = np.sort(order[:n_val]), order[n_val:]
    if max_train_episodes is not None:
        if max_train_episodes < 1:
            raise ValueError(f"max_train_episodes must be >= 1, got {max_train_episodes}")
        train = train[:max_train_episodes]
    return np.sort(train), val


class WindowSampler:
    """Index of every window of the chosen episodes; gathers row indices for batches of windows."""

    def __init__(
        self,
        episode_ends: np.ndarray,
        n_obs_steps: int,
        horizon: int,
        n_action_steps: int,
        episode_ids: Sequence[int] | None = None,
    ) -> None:
        if not 1 <= n_obs_steps <= horizon:
            raise ValueError(f"need 1 <= n_obs_steps ({n_obs_steps}) <= horizon ({horizon})")
        if not 1 <= n_action_steps <= horizon - n_obs_steps + 1:
            raise ValueError(
                f"need 1 <= n_action_steps ({n_action_steps}) <= horizon - n_obs_steps + 1 "
                f"({horizon - n_obs_steps + 1})"
            )
        self.n_obs_steps, self.horizon, self.n_action_steps = n_obs_steps, horizon, n_action_steps
        ends = np.asarray(episode_ends, dtype=np.int64)
        starts_of_ep = np.concatenate([[0], ends[:-1]])
        ids = np.arange(len(ends)) if episode_ids is None else np.asarray(episode_ids, dtype=np.int64)
        pad_before, pad_after = n_obs_steps - 1, n_action_steps - 1
        window_start, ep_lo, ep_hi, ep_id = [], [], [], []
        for e in ids:
            lo, hi = int(starts_of_ep[e]), int(ends[e])
            first, last = lo - pad_before, hi - horizon + pad_after
            s = np.arange(first, max(last, first) + 1)  # always at least one window per episode
            window_start.append(s)
            ep_lo.append(np.full(len(s), lo))
            ep_hi.append(np.full(len(s), hi))
            ep_id.append(np.full(len(s), e))
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64)  # noqa: E731
        self.window_start, self.ep_lo, self.ep_hi = cat(window_start), cat(ep_lo), cat(ep_hi)
        self.window_episode = cat(ep_id)
        self._offsets = np.arange(horizon, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.window_start)

    def rows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row indices [n, T] into the concatenated store (edge-clamped) and the padding mask [n, T]."""
        windows = np.asarray(windows, dtype=np.int64)
        t = self.window_start[windows, None] + self._offsets
        lo, hi = self.ep_lo[windows, None], self.ep_hi[windows, None]
        is_pad = (t < lo) | (t >= hi)
        return np.clip(t, lo, hi - 1), is_pad
