"""The statistics a LeRobot v3.0 dataset carries: per episode (meta/episodes `stats/<feature>/<stat>`
columns) and over the whole dataset (meta/stats.json), as LeRobot's own writer lays them out.

Each feature gets min, max, mean, std, count and the quantiles q01, q10, q50, q90, q99 (LeRobot's
QUANTILES normalisation, which pi0.5 uses, reads q01 and q99). Low-dim features: one value per
dimension over the rows. Camera features: one value per colour channel, shape (3, 1, 1), of pixel values
scaled to [0, 1]; count is the number of frames.

The values here are exact: low-dim quantiles come from the rows themselves and pixel quantiles from
per-channel histograms of the 256 byte values (numpy's default, linear interpolation between the two
nearest ranks). LeRobot's writer estimates them from 5,000-bin histograms of a sample of frames and
averages the episodes' quantiles into the dataset's, so its numbers differ from these in the last
digits (and, for the dataset-wide quantiles, by what averaging quantiles loses).
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)  # q01 ... q99, LeRobot's names


def _jsonable(stats: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: v.tolist() for k, v in stats.items()}


class LowDimStats:
    """Stats of a low-dim feature: per dimension over rows, for each episode and (keeping the rows) overall."""

    def __init__(self) -> None:
        self._rows: list[np.ndarray] = []

    @staticmethod
    def of(rows: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(rows).reshape(len(rows), -1).astype(np.float64)
        out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0),
               "count": np.array([len(x)], dtype=np.int64)}
        out.update(zip(QUANTILE_KEYS, np.quantile(x, QUANTILES, axis=0)))
        return out

    def add(self, rows: np.ndarray) -> dict[str, Any]:
        """Take one episode's rows; returns that episode's stats (JSON-ready)."""
        self._rows.append(np.asarray(rows))
        return _jsonable(self.of(rows))

    def total(self) -> dict[str, Any]:
        return _jsonable(self.of(np.concatenate(self._rows)))


class ImageStats:
    """Per-channel stats of uint8 RGB frames in [0, 1], from byte-value histograms (exact, and cheap)."""

    def __init__(self) -> None:
        self._hist = np.zeros((3, 256), dtype=np.int64)
        self._frames = 0

    @staticmethod
    def histogram(frames: np.ndarray) -> np.ndarray:
        pixels = np.asarray(frames, dtype=np.uint8).reshape(-1, 3)
        return np.stack([np.bincount(pixels[:, c], minlength=256) for c in range(3)])

    @staticmethod
    def of(hist: np.ndarray, n_frames: int) -> dict[str, np.ndarray]:
        values = np.arange(256, dtype=np.float64)
        n = hist.sum(1, keepdims=True).astype(np.float64)
        mean = (hist * values).sum(1) / n[:, 0]
        var = (hist * (values - mean[:, None]) ** 2).sum(1) / n[:, 0]
        seen = hist > 0
        out = {"min": values[seen.argmax(1)], "max": 255 - seen[:, ::-1].argmax(1).astype(np.float64),
               "mean": mean, "std": np.sqrt(var)}
        out.update(zip(QUANTILE_KEYS, (_histogram_quantile(hist, q) for q in QUANTILES)))
        shaped = {k: (v / 255.0).reshape(3, 1, 1) for k, v in out.items()}
        return {**shaped, "count": np.array([n_frames], dtype=np.int64)}

    def add(self, frames: np.ndarray) -> dict[str, Any]:
        """Take one episode's frames [n, H, W, 3]; returns that episode's stats (JSON-ready)."""
        hist = self.histogram(frames)
        self._hist += hist
        self._frames += len(frames)
        return _jsonable(self.of(hist, len(frames)))

    def total(self) -> dict[str, Any]:
        return _jsonable(self.of(self._hist, self._frames))


def _histogram_quantile(hist: np.ndarray, q: float) -> np.ndarray:
    """Per channel, the q-quantile of the byte values counted in `hist` [3, 256], as np.quantile's default
    (linear) method computes it on the values themselves: between the sorted values at ranks floor(h) and
    floor(h) + 1, h = q * (n - 1)."""
    cum = hist.cumsum(1)
    h = q * (cum[:, -1] - 1)
    lo_rank = np.floor(h)
    # The value at (0-based) rank r is the first byte value whose cumulative count exceeds r.
    lo = np.array([np.searchsorted(c, r, side="right") for c, r in zip(cum, lo_rank)], dtype=np.float64)
    hi = np.array([np.searchsorted(c, min(r + 1, c[-1] - 1), side="right") for c, r in zip(cum, lo_rank)],
                  dtype=np.float64)
    return lo + (h - lo_rank) * (hi - lo)
