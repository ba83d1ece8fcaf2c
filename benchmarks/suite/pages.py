"""The published pages of suite results, from committed results.json files alone.

- docs/results.md: every suite's full block (tables, targets, paired comparisons), with the per-task
  tables and the provenance folded into <details>, under a header naming the command that wrote it.
- the README's summary: one row per suite task where each of the summary policies has a row (at the
  summary budget), one column per policy, and a bar chart of the same numbers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmarks.suite.results import groups
from benchmarks.suite.tables import paired_counts, render

SUMMARY_POLICIES = ("mode", "dit", "cnn")  # the columns of the README summary, in this order
SUMMARY_BUDGET = "cpu"  # the budget whose blocks feed the summary (one protocol per row)
POLICY_TITLES = {"mode": "MoDE", "dit": "DiT", "cnn": "CNN"}


def relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve()).replace(os.sep, "/")


def summary_rows(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """[{suite, task, cells: {policy: pooled last-EMA success}, paired: {policy: counts vs mode}}]."""
    rows = []
    for doc in docs:
        if doc.get("budget") != SUMMARY_BUDGET:
            continue
        gs = groups(doc)
        pairs = {(c["task"], c["name"]): c for c in paired_counts(doc) if c["ref"] == SUMMARY_POLICIES[0]}
        for task in dict.fromkeys(g["task"] for g in gs):
            cells = {g["variant"]: g["last"] for g in gs if g["task"] == task and g["variant"] in SUMMARY_POLICIES}
            if len(cells) == len(SUMMARY_POLICIES):
                rows.append({"suite": doc.get("suite", "?"), "task": task, "cells": cells,
                             "paired": {p: pairs.get((task, p)) for p in SUMMARY_POLICIES[1:]}})
    return rows


def _cell(s: dict[str, Any]) -> str:
    return f"{s['success_rate']:.2f} ({s['n_success']}/{s['n_episodes']})"


def _paired(c: dict[str, Any] | None) -> str:
    return "not paired" if not c or not c["n"] else f"p = {c['p']:.2g}"


def summary_markdown(rows: list[dict[str, Any]], picture: str, results_page: str) -> str:
    titles = [POLICY_TITLES.get(p, p) for p in SUMMARY_POLICIES]
    mode = titles[0]
    head = ["task (suite)", *titles, *(f"{mode} vs {t}, McNemar" for t in titles[1:])]
    lines = [f"![success per task and policy]({picture})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['task']} ({r['suite']})", *(_cell(r["cells"][p]) for p in SUMMARY_POLICIES),
                 *(_paired(r["paired"][p]) for p in SUMMARY_POLICIES[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Success of the last EMA weights, pooled over training seeds (successes/episodes); McNemar: the "
              f"exact paired test on the same evaluation episodes. Budget `{SUMMARY_BUDGET}`; every table, "
              f"interval and per-task number: [{results_page}]({results_page})."]
    return "\n".join(lines) + "\n"


def results_page(dirs: list[Path], docs: list[dict[str, Any]], page: Path, command: str) -> str:
    """The whole of docs/results.md."""
    here = page.parent
    head = ["# Results", "",
            "<!-- generated: do not edit by hand -->",
            "Generated from the committed `results.json` files by", "", "```bash", command, "```", "",
            "A row is one training seed unless its *seeds* column says more. Terms (Wilson interval, McNemar "
            "test, EMA, budget, suite) are in the [glossary](glossary.md); how a suite runs is in "
            "[suites.md](suites.md); where the published numbers come from (relabelled runs, rescoring, "
            "store hashes, machines) is in [maintainers.md](maintainers.md). Latencies compare within one "
            "block only.", ""]
    blocks = [render(doc, image_prefix=relative(d, here) + "/", heading="##", fold=True) for d, doc in zip(dirs, docs)]
    return "\n".join(head) + "\n" + "\n".join(blocks)
