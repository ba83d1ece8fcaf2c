"""The transfer study's markdown table and bar plot, drawn from the report document (summary.py) alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ARM_LABELS = {"scratch": "scratch", "ft": "fine-tuned (pretrained)", "ctrl": "control (untrained init_from)"}
TABLE_COLUMNS = ("task", "demos", "arm", "success, pooled [95% CI]", "successes / episodes", "per seed",
                 "final val loss", "vs scratch: only arm / only scratch", "McNemar p")


def fmt_loss(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def comparison_of(doc: dict[str, Any], g: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in doc["comparisons"]
                 if (c["task"], c["n_demos"], c["arm"]) == (g["task"], g["n_demos"], g["arm"])), None)


def table_lines(doc: dict[str, Any]) -> list[str]:
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for g in doc["groups"]:
        lo, hi = g["success_ci95"]
        per_seed = ", ".join(f"s{s['seed']} {s['n_success']}/{s['n_episodes']}" for s in g["per_seed"])
        c = comparison_of(doc, g)
        vs, p = "—", "—"
        if c is not None and c["n_pairs"]:
            vs, p = f"{c['only_arm']} / {c['only_ref']} of {c['n_pairs']}", f"{c['p']:.3g}"
        elif c is not None:
            vs = "no paired episodes"
        cells = [g["task"], str(g["n_demos"]), g["arm"], f"{g['success_rate']:.2f} [{lo:.2f}, {hi:.2f}]",
                 f"{g['n_success']} / {g['n_episodes']}", per_seed, fmt_loss(g["final_val_loss_mean"]), vs, p]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(doc: dict[str, Any]) -> str:
    out = [f"Transfer study `{doc['source']}`: success pooled over seeds (Wilson 95% interval); each arm "
           f"against `{doc['reference_arm']}` on episodes paired by (training seed, task, evaluation seed), "
           "exact McNemar test; final validation loss is the mean over seeds of each run's last `val/loss`.",
           "", *table_lines(doc)]
    unpaired = [c for c in doc["comparisons"] if c["unpaired"]]
    if unpaired:
        out += ["", *(f"- {c['task']}, {c['n_demos']} demos, {c['arm']} vs {c['ref']}: {c['unpaired']} "
                      "episode(s) without a partner (another training seed or evaluation seed)" for c in unpaired)]
    if doc["notes"]:
        out += ["", "Left out:", *(f"- {n}" for n in doc["notes"])]
    return "\n".join(out) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def success_plot(doc: dict[str, Any], path: Path) -> Path:
    """Grouped bars: one group per (task, demos), one bar per arm with its pooled Wilson interval, and each
    seed's own rate as a dot on its bar."""
    plt = _pyplot()
    cells = list(dict.fromkeys((g["task"], g["n_demos"]) for g in doc["groups"]))
    arms = list(dict.fromkeys(g["arm"] for g in doc["groups"]))
    width = 0.8 / max(1, len(arms))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(cells) * len(arms) / 2 + 3), 3.6), dpi=120)
    for j, arm in enumerate(arms):
        xs, rates, err = [], [], [[], []]
        for i, cell in enumerate(cells):
            g = next((g for g in doc["groups"] if (g["task"], g["n_demos"], g["arm"]) == (*cell, arm)), None)
            if g is None:
                continue
            x = i + (j - (len(arms) - 1) / 2) * width
            lo, hi = g["success_ci95"]
            xs.append(x)
            rates.append(g["success_rate"])
            # max(0, ...): Wilson bounds equal the rate at 0 and 1 up to rounding; matplotlib rejects -1e-17
            err[0].append(max(0.0, g["success_rate"] - lo))
            err[1].append(max(0.0, hi - g["success_rate"]))
            seeds = [s["success_rate"] for s in g["per_seed"]]
            ax.scatter([x + width * 0.25] * len(seeds), seeds, s=9, color="black", zorder=3)  # beside the CI bar
        ax.bar(xs, rates, width=width * 0.95, yerr=err, capsize=2, label=ARM_LABELS.get(arm, arm))
    ax.set_xticks(range(len(cells)), [f"{t}\n{n} demos" for t, n in cells], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (Wilson 95% CI)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"transfer study: {doc['source']} (dots: seeds)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
