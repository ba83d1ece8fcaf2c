"""The runs of a transfer study directory: one record per run directory named `{arm}-{task}-{n}-s{seed}` that
holds an evaluation (`eval/*/eval_info.json`), with its newest evaluation's per-episode outcomes and its final
validation loss.

    runs, notes = read_study(Path("outputs/transfer_libero"))

Nothing here computes statistics (summary.py does): a record keeps exactly what the files say, so the saved
report can be recomputed from its runs alone.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import yaml

from benchmarks.suite.records import read_json  # None for a missing or half-written file

# {arm}-{task}-{n}-s{seed}: the task may hold hyphens (Meta-World's window-open-v3); n and seed end the name.
RUN_NAME = re.compile(r"^(?P<arm>[A-Za-z0-9_]+)-(?P<task>.+)-(?P<n>\d+)-s(?P<seed>\d+)$")
VAL_LOSS = "val/loss"


class StudyError(ValueError):
    """The study directory cannot be read as one; the message is one line."""


def newest_eval(run: Path) -> tuple[Path, dict[str, Any]] | None:
    """The run's most recent evaluation: by the `created` time eval_rollouts.py writes, then by directory
    name (its timestamp when `out=` was not given), so an older re-scoring never hides a newer one."""
    found = [(p, read_json(p)) for p in sorted(run.glob("eval/*/eval_info.json"))]
    found = [(p, info) for p, info in found if isinstance(info, dict) and isinstance(info.get("episodes"), list)]
    if not found:
        return None
    return max(found, key=lambda pi: (str(pi[1].get("created") or ""), pi[0].parent.name))


def outcomes(info: dict[str, Any]) -> list[list[Any]]:
    """[[task name, episode seed, 0|1], ...] sorted: what pairs two arms' episodes. The episode seed fixes the
    episode's start (LIBERO's init state, the env's randomisation) and its sampling noise, so two policies
    evaluated with the same seeds faced the same episodes; an errored episode counts as a failure."""
    rows = []
    for e in info["episodes"]:
        ok = bool(e.get("success")) and not e.get("error")
        rows.append([str(e.get("task_name", e.get("task", ""))), int(e["seed"]), int(ok)])
    return sorted(rows)


def val_loss_curve(run: Path) -> list[list[float]]:
    """[[step, val/loss], ...] from the CSV logger's metrics.csv (empty without one)."""
    path = run / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    curve = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            value, step = row.get(VAL_LOSS) or "", row.get("step") or ""
            if value and step:
                curve.append([int(float(step)), float(value)])
    return curve


def config_mismatch(run: Path, n: int, seed: int) -> str | None:
    """Why the run's own config.yaml contradicts its name (seed or demo count), or None."""
    cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else None
    if not isinstance(cfg, dict):
        return None
    cfg_seed, cfg_n = cfg.get("seed"), (cfg.get("data") or {}).get("max_train_episodes")
    if cfg_seed is not None and int(cfg_seed) != seed:
        return f"its name says seed {seed}, its config.yaml seed={cfg_seed}"
    if cfg_n is not None and int(cfg_n) != n:
        return f"its name says {n} demos, its config.yaml data.max_train_episodes={cfg_n}"
    return None


def read_run(run: Path, study: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the run's record, None) or (None, a one-line note saying why it is left out)."""
    evaluated = newest_eval(run)
    if evaluated is None:
        return None, f"{run.name}: no eval/*/eval_info.json, left out"
    match = RUN_NAME.match(run.name)
    if match is None:
        return None, f"{run.name}: not named {{arm}}-{{task}}-{{n}}-s{{seed}}, left out"
    n, seed = int(match["n"]), int(match["seed"])
    if why := config_mismatch(run, n, seed):
        return None, f"{run.name}: {why}, left out"
    path, info = evaluated
    curve = val_loss_curve(run)
    rows = outcomes(info)
    return {
        "name": run.name, "arm": match["arm"], "task": match["task"], "n_demos": n, "seed": seed,
        "eval_info": str(path.relative_to(study)), "created": info.get("created"),
        "global_step": info.get("global_step"), "tasks": [t.get("name") for t in info.get("tasks", [])],
        "n_episodes": len(rows), "n_success": sum(r[2] for r in rows),
        "n_errors": sum(1 for e in info["episodes"] if e.get("error")),
        "outcomes": rows, "val_loss_curve": curve, "final_val_loss": curve[-1][1] if curve else None,
    }, None


def is_run_dir(path: Path) -> bool:
    """What train.py leaves in a run directory (other folders, such as the study's logs, are not runs)."""
    return path.is_dir() and any((path / name).exists() for name in ("config.yaml", "checkpoints", "eval"))


def read_study(study: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every evaluated run under `study` (sorted by name) and one note per directory left out."""
    if not study.exists():
        raise StudyError(f"{study}: no such directory")
    if not study.is_dir():
        raise StudyError(f"{study}: not a directory (give the study directory, or a saved report .json)")
    runs, notes = [], []
    for run in sorted(p for p in study.iterdir() if is_run_dir(p)):
        record, note = read_run(run, study)
        if record is not None:
            runs.append(record)
        else:
            notes.append(note)
    if not runs:
        raise StudyError(f"{study}: no run directory with an eval/*/eval_info.json "
                         f"({len(notes)} run director{'y' if len(notes) == 1 else 'ies'} without one)")
    return runs, notes
