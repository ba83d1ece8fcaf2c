"""A suite's pictures: success per policy with Wilson 95% intervals, and the per-task heatmap of
multitask suites (policies x env tasks, last EMA weights, pooled over seeds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.suite.results import groups


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def success_plot(doc: dict[str, Any], path: Path) -> Path:
    """Grouped bars: one group per suite task, one bar per policy; last EMA and best-val panels."""
    plt = _pyplot()
    gs = groups(doc)
    tasks = list(dict.fromkeys(g["task"] for g in gs))
    variants = list(dict.fromkeys(g["variant"] for g in gs))
    width = 0.8 / max(1, len(variants))
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.2 * len(tasks) * len(variants) / 2 + 4), 3.6), dpi=120,
                             sharey=True)
    for ax, which, title in zip(axes, ("last", "best"), ("last EMA weights", "best by validation")):
        for j, v in enumerate(variants):
            xs, rates, err = [], [], [[], []]
            for i, t in enumerate(tasks):
                s = next((g[which] for g in gs if g["task"] == t and g["variant"] == v), None)
                if s is None:
                    continue
                lo, hi = s["success_ci95"]
                xs.append(i + (j - (len(variants) - 1) / 2) * width)
                rates.append(s["success_rate"])
                # max(0, ...): Wilson bounds equal the rate at 0 and 1 up to rounding; matplotlib rejects -1e-17
                err[0].append(max(0.0, s["success_rate"] - lo))
                err[1].append(max(0.0, hi - s["success_rate"]))
            ax.bar(xs, rates, width=width * 0.95, yerr=err, capsize=2, label=v)
        ax.set_xticks(range(len(tasks)), tasks, rotation=30 if len(tasks) > 4 else 0, ha="right"
                      if len(tasks) > 4 else "center")
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("success rate (Wilson 95% CI)")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"{doc.get('suite', '')} (budget={doc.get('budget', '')})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def heatmap_matrix(doc: dict[str, Any], which: str = "last") -> tuple[list[str], list[str], np.ndarray]:
    """(policy labels, env-task labels, success [policies, tasks]); NaN where a policy has no number.

    Columns are the env tasks of each suite task in order, named by the env task when the suite has one
    task, by the suite task when it has one env task, else `suite task/env task`."""
    gs = [g for g in groups(doc) if g[which] is not None]
    suite_tasks = list(dict.fromkeys(g["task"] for g in gs))
    columns: list[tuple[str, str, str]] = []  # (suite task, env task, label)
    for t in suite_tasks:
        env_tasks = list(dict.fromkeys(e for g in gs if g["task"] == t for e in g[which]["per_task"]))
        for e in env_tasks:
            label = e if len(suite_tasks) == 1 else t if len(env_tasks) == 1 else f"{t}/{e}"
            columns.append((t, e, label))
    rows = list(dict.fromkeys(g["variant"] for g in gs))
    matrix = np.full((len(rows), len(columns)), np.nan)
    for g in gs:
        for c, (t, e, _) in enumerate(columns):
            s = g[which]["per_task"].get(e) if g["task"] == t else None
            if s and s["n_episodes"]:  # a task without episodes (fewer episodes than tasks) stays NaN
                matrix[rows.index(g["variant"]), c] = s["success_rate"]
    return rows, [label for _, _, label in columns], matrix


def heatmap_plot(doc: dict[str, Any], path: Path, which: str = "last") -> Path:
    plt = _pyplot()
    rows, cols, matrix = heatmap_matrix(doc, which)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.28 * len(cols) + 2.5), 0.45 * len(rows) + 2.2), dpi=120)
    im = ax.imshow(np.ma.masked_invalid(matrix), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    if len(cols) <= 12:  # numbers in the cells while they stay legible
        for (i, j), v in np.ndenumerate(matrix):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="success")
    ax.set_title(f"{doc.get('suite', '')}: success per task ({'last EMA' if which == 'last' else 'best val'}, "
                 "pooled over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def summary_plot(rows: list[dict[str, Any]], policies: tuple[str, ...], titles: dict[str, str], path: Path) -> Path:
    """The README's picture: one group per (suite task), one bar per policy, Wilson 95% intervals."""
    plt = _pyplot()
    width = 0.8 / max(1, len(policies))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(rows) + 1.5), 3.2), dpi=120)
    for j, p in enumerate(policies):
        xs = [i + (j - (len(policies) - 1) / 2) * width for i in range(len(rows))]
        rates = [r["cells"][p]["success_rate"] for r in rows]
        err = [[max(0.0, r["cells"][p]["success_rate"] - r["cells"][p]["success_ci95"][0]) for r in rows],
               [max(0.0, r["cells"][p]["success_ci95"][1] - r["cells"][p]["success_rate"]) for r in rows]]
        ax.bar(xs, rates, width=width * 0.95, yerr=err, capsize=2, label=titles.get(p, p))
    ax.set_xticks(range(len(rows)), [r["task"] for r in rows])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success (Wilson 95% CI)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
