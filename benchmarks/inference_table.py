"""The README's inference table, regenerated from saved results (python -m benchmarks.inference --markdown).

One row per (size, case): latency at each batch, FLOPs per chunk at batch 1, the fraction of the
same-shape GEMM rate and of the copy bandwidth reached, and the limit that reading implies:
  memory   the chunk streams its block weights at >= 50% of the copy bandwidth (batch 1, big models)
  compute  it runs at >= 60% of a plain GEMM of the same shape and precision
  overhead neither: per-op launch / Python cost and small GEMMs dominate
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from benchmarks.common import RESULTS_DIR

ORDER = ["mode-cached", "mode-compiled-step", "mode-compiled-loop", "mode-compiled-graph", "mode-bf16",
         "mode-bf16-compiled-step", "mode-int8", "mode-uncached", "dit", "cnn", "peer-cached", "peer-uncached"]


def limit(gemm_fraction: float | None, bw_fraction: float | None) -> str:
    if bw_fraction is not None and bw_fraction >= 0.5:
        return f"memory ({bw_fraction:.0%} of copy BW)"
    if gemm_fraction is not None and gemm_fraction >= 0.6:
        return f"compute ({gemm_fraction:.0%} of GEMM)"
    parts = [f"{gemm_fraction:.0%} of GEMM" if gemm_fraction is not None else "",
             f"{bw_fraction:.0%} of BW" if bw_fraction is not None else ""]
    return "overhead (" + ", ".join(p for p in parts if p) + ")"


def _fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms / 1e3:.2f} s" if ms >= 1000 else f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"


def markdown_table(path: Path | None = None) -> str:
    path = path or RESULTS_DIR / "inference-cpu.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `python -m benchmarks.inference --save` first")
    rows: dict[tuple[str, str], dict] = defaultdict(dict)
    ratios: dict[str, dict[str, str]] = defaultdict(dict)  # "a vs b" -> "size bN" -> value
    batches: set[int] = set()
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        case, metric, size = rec["case"], rec["metric"], rec.get("size", "default")
        if metric == "speedup" and "batch" in rec:
            mark = "*" if rec.get("chained_via") else ""
            ratios[case.rsplit("-b", 1)[0].replace("_vs_", " vs ")][f"{size} b{rec['batch']}"] = \
                f"{rec['value']:.2f}×{mark}"
            continue
        if "-b" not in case or "batch" not in rec:
            continue
        name, batch = case.rsplit("-b", 1)
        if not batch.isdigit():
            continue
        batches.add(int(batch))
        rows[(size, name)][(metric, int(batch))] = rec["value"]
    batches_sorted = sorted(batches)
    head = ["size", "case", *[f"latency b{b}" for b in batches_sorted], "FLOPs/chunk b1",
            *[f"limit b{b}" for b in batches_sorted]]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    sizes = sorted({s for s, _ in rows}, key=["default", "small", "paper"].index)
    for size in sizes:
        for name in [n for n in ORDER if (size, n) in rows]:
            r = rows[(size, name)]
            flops = r.get(("flops_per_chunk", 1))
            cells = [size, name, *[_fmt_ms(r.get(("latency_ms", b))) for b in batches_sorted],
                     f"{flops / 1e9:.2f} G" if flops else "—"]
            for b in batches_sorted:
                ok = ("latency_ms", b) in r
                cells.append(limit(r.get(("gemm_fraction", b)), r.get(("mem_bw_fraction", b))) if ok else "—")
            out.append("| " + " | ".join(cells) + " |")
    columns = sorted({c for v in ratios.values() for c in v},
                     key=lambda c: (["default", "small", "paper"].index(c.split()[0]), int(c.split()[1][1:])))
    out += ["", "| speedup (> 1: the first is faster) | " + " | ".join(columns) + " |",
            "|" + "---|" * (len(columns) + 1)]
    out += [f"| {name} | " + " | ".join(v.get(c, "—") for c in columns) + " |" for name, v in ratios.items()]
    if any("*" in x for v in ratios.values() for x in v.values()):
        out.append("\n\\* the original timed in interleaved groups of its own with mode-cached (its cache fits only "
                   "beside MoDE alone), the ratio chained through mode-cached")
    return "\n".join(out)
