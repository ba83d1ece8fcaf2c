"""The charts of docs/performance.md, drawn from the committed JSON lines in benchmarks/results/.

    python -m benchmarks.charts [--out docs/img] [--results benchmarks/results]

Writes inference-latency-cpu.png (latency per action chunk, per model size, case and batch),
inference-speedups-cpu.png (the same-run ratios: > 1 means the first case is faster). Training speed has its
own chart (`python benchmarks/train_throughput.py --chart`, docs/training-speed.md). A later record of the
same (size, case, batch) replaces an earlier one, as `python -m benchmarks.inference --markdown` reads it.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS_DIR
from benchmarks.inference_table import ORDER

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
SIZES = ("default", "small", "paper")  # benchmarks/inference.py --sizes


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the benchmark with --save first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def inference_latency(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, float]]:
    """{(size, batch): {case: latency ms}} from inference-<device>.jsonl."""
    out: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for r in records:
        if r["metric"] != "latency_ms" or "batch" not in r:
            continue
        name, _, batch = r["case"].rpartition("-b")
        if batch.isdigit():
            out[(r.get("size", "default"), int(batch))][name] = r["value"]
    return out


def latency_chart(records: list[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    lat = inference_latency(records)
    panels = [(s, b) for s in SIZES for b in sorted({b for _, b in lat}) if (s, b) in lat]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 4.2), dpi=110)
    for ax, (size, batch) in zip(np.atleast_1d(axes), panels):
        cases = [c for c in ORDER if c in lat[(size, batch)]]
        values = [lat[(size, batch)][c] for c in cases]
        colors = ["tab:blue" if c.startswith("mode") else "tab:orange" if c.startswith("peer") else "tab:gray"
                  for c in cases]
        ax.barh(range(len(cases)), values, color=colors)
        ax.set_yticks(range(len(cases)), cases, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{size}, batch {batch}", fontsize=9)
        ax.set_xlabel("ms per chunk", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.0f}" if v >= 10 else f" {v:.1f}", va="center", fontsize=6)
    fig.suptitle("Inference latency per action chunk (CPU, 1 thread, 10 DDIM steps); blue: MoDE, "
                 "gray: baselines, orange: the original authors' transformer", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def speedups(records: list[dict[str, Any]]) -> tuple[list[str], list[str], np.ndarray]:
    """(comparisons "a vs b", columns "size bN", ratios [comparisons, columns], NaN where not measured)."""
    cells: dict[str, dict[str, float]] = defaultdict(dict)
    for r in records:
        if r["metric"] == "speedup" and "batch" in r:
            name = r["case"].rsplit("-b", 1)[0].replace("_vs_", " vs ")
            cells[name][f"{r.get('size', 'default')} b{r['batch']}"] = r["value"]
    columns = [f"{s} b{b}" for s in SIZES for b in (1, 32) if any(f"{s} b{b}" in c for c in cells.values())]
    rows = list(cells)
    matrix = np.array([[cells[r].get(c, np.nan) for c in columns] for r in rows])
    return rows, columns, matrix


def speedup_chart(records: list[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    rows, columns, matrix = speedups(records)
    fig, ax = plt.subplots(figsize=(1.2 * len(columns) + 4.5, 0.32 * len(rows) + 1.6), dpi=110)
    im = ax.imshow(np.ma.masked_invalid(np.log2(matrix)), cmap="RdBu", vmin=-2.5, vmax=2.5, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    for (i, j), v in np.ndenumerate(matrix):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}×", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="log2 speed-up (> 0: the first is faster)")
    ax.set_title("Speed-up, measured interleaved in one run (CPU, 1 thread)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DOCS_IMG, help="folder of the PNG files (default docs/img)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the *.jsonl results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    inference = read_jsonl(args.results / "inference-cpu.jsonl")
    written = [latency_chart(inference, args.out / "inference-latency-cpu.png"),
               speedup_chart(inference, args.out / "inference-speedups-cpu.png")]
    for p in written:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
