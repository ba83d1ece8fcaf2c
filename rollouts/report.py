"""What an evaluation leaves behind: eval_info.json, a per-task table, a success bar chart, the numbers
to log. Works on the metrics dict of `rollouts.runner.run`; shared by the evaluation
(training/evaluate.py) and the training callback. The W&B objects are training/eval_logging.py's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

AGGREGATE_KEYS = ("success_rate", "success_ci95", "n_episodes", "n_success", "n_errors", "mean_steps",
                  "mean_return", "episodes_per_s", "env_steps_per_s", "env_steps", "wall_s", "workers",
                  "worker_cpu_s", "n_obs_steps", "n_action_steps", "stop_on_success", "sampling_noise",
                  "transition")


def eval_info(metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The eval_info.json document: aggregate, per_task, per-episode records, videos, plus `extra`."""
    return {
        **extra,
        "aggregate": {k: metrics[k] for k in AGGREGATE_KEYS if k in metrics},
        "per_task": metrics["per_task"],
        "episodes": metrics["episodes"],
        "videos": metrics.get("video_paths", []),
    }


def write_eval_info(path: str | os.PathLike, info: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename) so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def format_rate(summary: dict[str, Any]) -> str:
    lo, hi = summary["success_ci95"]
    return f"{summary['success_rate']:.2f} [{lo:.2f}, {hi:.2f}]"


def print_table(metrics: dict[str, Any], title: str = "rollout evaluation", console=None) -> None:
    """Per-task success table (rich), with an overall row when there are several tasks."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("task", "success [95% CI]", "episodes", "errors", "mean steps"):
        table.add_column(col, justify="left" if col == "task" else "right")
    rows = list(metrics["per_task"].items())
    if len(rows) > 1:
        rows.append(("all", metrics))
    for name, s in rows:
        table.add_row(name, format_rate(s), str(s["n_episodes"]), str(s["n_errors"]),
                      f"{s['mean_steps']:.0f}")
    (console or Console()).print(table)
    print(f"{metrics['n_episodes']} episodes in {metrics['wall_s']:.1f} s: "
          f"{metrics['episodes_per_s']:.2f} episodes/s, {metrics['env_steps_per_s']:.0f} env steps/s")


def success_bar_chart(metrics: dict[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Bars of per-task success rates with their Wilson 95% intervals as error bars (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics["per_task"])
    rates = [metrics["per_task"][n]["success_rate"] for n in names]
    # max(0, ...): the Wilson bounds equal the rate at 0 and 1 up to rounding, and matplotlib rejects -1e-17.
    lows = [max(0.0, r - metrics["per_task"][n]["success_ci95"][0]) for r, n in zip(rates, names)]
    highs = [max(0.0, metrics["per_task"][n]["success_ci95"][1] - r) for r, n in zip(rates, names)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3.5), dpi=120)
    ax.bar(range(len(names)), rates, yerr=[lows, highs], capsize=3, color="#4C72B0")
    ax.axhline(metrics["success_rate"], color="#DD8452", ls="--", lw=1,
               label=f"all tasks: {metrics['success_rate']:.2f}")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% CI)")
    ax.set_title(title or f"success per task ({metrics['n_episodes']} episodes)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def scalar_metrics(metrics: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    """Flat numbers to log: success rate (+ CI bounds), per-task rates, throughput, errors."""
    out = {
        f"{prefix}/success_rate": float(metrics["success_rate"]),
        f"{prefix}/success_ci95_low": float(metrics["success_ci95"][0]),
        f"{prefix}/success_ci95_high": float(metrics["success_ci95"][1]),
        f"{prefix}/n_errors": float(metrics["n_errors"]),
        f"{prefix}/mean_steps": float(metrics["mean_steps"]),
        f"{prefix}/episodes_per_s": float(metrics["episodes_per_s"]),
    }
    if len(metrics["per_task"]) > 1:
        for name, s in metrics["per_task"].items():
            out[f"{prefix}/success_rate/{name}"] = float(s["success_rate"])
    return out
