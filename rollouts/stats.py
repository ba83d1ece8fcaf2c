"""Success rates with Wilson score intervals, overall and per task, from per-episode records."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when there are no trials.

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not degenerate at 0 or n
    successes, which is where small rollout evaluations usually land.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value for two policies evaluated on the same episodes (seeds): under
    "equally good", each of the only_a + only_b discordant episodes is a fair coin, so the p-value is
    twice the binomial tail of the smaller count, capped at 1. Episodes both solve or both fail carry
    no information about the difference and do not enter."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a}, {only_b}")
    n = only_a + only_b
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def rate_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """success_rate, 95% Wilson interval and counts for a group of episode records.

    An episode that errored counts as a failure (it is in n_episodes, not in n_success).
    """
    n = len(records)
    n_success = sum(1 for r in records if r["success"] and not r.get("error"))
    lo, hi = wilson_interval(n_success, n)
    return {
        "success_rate": n_success / n if n else 0.0,
        "success_ci95": [lo, hi],
        "n_episodes": n,
        "n_success": n_success,
        "n_errors": sum(1 for r in records if r.get("error")),
        "mean_steps": sum(r["steps"] for r in records) / n if n else 0.0,
        "mean_return": sum(r["return"] for r in records) / n if n else 0.0,
    }


def summarize(records: Sequence[dict[str, Any]], task_names: Sequence[str]) -> dict[str, Any]:
    """The overall summary plus `per_task` {name: summary}, tasks in their index order."""
    out = rate_summary(records)
    out["per_task"] = {
        name: rate_summary([r for r in records if r["task"] == i]) for i, name in enumerate(task_names)
    }
    return out
