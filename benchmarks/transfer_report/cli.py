"""`python -m benchmarks.transfer_report DIR [--save JSON] [--markdown] [--plot PNG]`: the transfer study's
report from its run directories (or, given a saved report .json, from that)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks.transfer_report.render import markdown, success_plot
from benchmarks.transfer_report.runs import StudyError, read_study
from benchmarks.transfer_report.summary import build_doc, recompute


def load(source: Path) -> dict[str, Any]:
    """The report document of a study directory, or of a report saved earlier (a .json file)."""
    if source.is_file() and source.suffix == ".json":
        try:
            return recompute(json.loads(source.read_text()))
        except ValueError as err:  # unparsable JSON or another kind of document
            raise StudyError(f"{source}: {err}") from None
    runs, notes = read_study(source)
    return build_doc(runs, notes, source=str(source))


def save(doc: dict[str, Any], path: Path) -> Path:
    """Temp file + rename: a committed result is never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def text_lines(doc: dict[str, Any]) -> list[str]:
    """One line per (task, demos, arm): pooled success and its comparison with scratch."""
    out = []
    for g in doc["groups"]:
        lo, hi = g["success_ci95"]
        line = (f"{g['task']} {g['n_demos']} demos {g['arm']}: {g['n_success']}/{g['n_episodes']} = "
                f"{g['success_rate']:.2f} [{lo:.2f}, {hi:.2f}] over seeds {g['seeds']}")
        c = next((c for c in doc["comparisons"]
                  if (c["task"], c["n_demos"], c["arm"]) == (g["task"], g["n_demos"], g["arm"])), None)
        if c is not None and c["n_pairs"]:
            line += (f"; vs {c['ref']} on {c['n_pairs']} paired episodes: only {g['arm']} {c['only_arm']}, "
                     f"only {c['ref']} {c['only_ref']}, McNemar p = {c['p']:.3g}")
        elif c is not None:
            line += f"; no episode paired with {c['ref']}"
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transfer_report", description=__doc__)
    parser.add_argument("source", type=Path, help="the study directory (its run directories), or a saved report")
    parser.add_argument("--save", type=Path, help="write the report (the committed result) to this .json")
    parser.add_argument("--markdown", action="store_true", help="print the markdown table")
    parser.add_argument("--plot", type=Path, help="draw the success bars into this PNG")
    args = parser.parse_args(argv)
    try:
        doc = load(args.source)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in doc["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(markdown(doc) if args.markdown else "\n".join(text_lines(doc)))
    if args.save:
        print(f"saved {save(doc, args.save)}", file=sys.stderr)
    if args.plot:
        print(f"plot {success_plot(doc, args.plot)}", file=sys.stderr)
    return 0
