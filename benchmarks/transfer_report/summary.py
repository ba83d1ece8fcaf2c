"""The transfer study's numbers from its run records (runs.py): per (task, demos, arm) the successes pooled
over seeds with a Wilson 95% interval and the per-seed rates, and every arm against training from scratch on
paired episodes with the exact McNemar test.

    doc = build_doc(runs, notes, source="outputs/transfer_libero")   # what --save writes

The saved document keeps the runs (with their per-episode outcomes), so `groups` and `comparisons` can be
recomputed from it alone (`summarise`), and the table and plot are drawn from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rollouts.stats import mcnemar_exact, wilson_interval

SCHEMA = "transfer_report/1"
REFERENCE_ARM = "scratch"
ARM_ORDER = ("scratch", "ft", "ctrl")  # then any other arm, by name


def arm_rank(arm: str) -> tuple[int, str]:
    return (ARM_ORDER.index(arm), "") if arm in ARM_ORDER else (len(ARM_ORDER), arm)


def rate(n_success: int, n_episodes: int) -> dict[str, Any]:
    lo, hi = wilson_interval(n_success, n_episodes)
    return {"n_success": n_success, "n_episodes": n_episodes,
            "success_rate": n_success / n_episodes if n_episodes else 0.0, "success_ci95": [lo, hi]}


def mean(values: Iterable[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    return sum(have) / len(have) if have else None


def group_runs(runs: list[dict[str, Any]]) -> dict[tuple[str, int, str], list[dict[str, Any]]]:
    """(task, n demos, arm) -> its runs, one per seed, in study order (task, demos, arm), seeds ascending."""
    out: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in sorted(runs, key=lambda r: (r["task"], r["n_demos"], arm_rank(r["arm"]), r["seed"])):
        out.setdefault((r["task"], r["n_demos"], r["arm"]), []).append(r)
    return out


def group_summary(task: str, n: int, arm: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    pooled = rate(sum(r["n_success"] for r in runs), sum(r["n_episodes"] for r in runs))
    return {"task": task, "n_demos": n, "arm": arm, "seeds": [r["seed"] for r in runs], **pooled,
            "n_errors": sum(r["n_errors"] for r in runs),
            "per_seed": [{"seed": r["seed"], **rate(r["n_success"], r["n_episodes"]),
                          "final_val_loss": r["final_val_loss"]} for r in runs],
            "final_val_loss_mean": mean(r["final_val_loss"] for r in runs)}


def paired(arm_runs: list[dict[str, Any]], ref_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Episodes of the two arms matched on (training seed, task, episode seed); counts and McNemar's p."""
    def keyed(runs: list[dict[str, Any]]) -> dict[tuple[int, str, int], int]:
        return {(r["seed"], task, ep_seed): ok for r in runs for task, ep_seed, ok in r["outcomes"]}

    a, ref = keyed(arm_runs), keyed(ref_runs)
    both = sorted(a.keys() & ref.keys())
    only_arm = sum(1 for k in both if a[k] and not ref[k])
    only_ref = sum(1 for k in both if ref[k] and not a[k])
    return {"n_pairs": len(both), "unpaired": len(a) + len(ref) - 2 * len(both),
            "seeds": sorted({k[0] for k in both}), "arm_successes": sum(a[k] for k in both),
            "ref_successes": sum(ref[k] for k in both), "only_arm": only_arm, "only_ref": only_ref,
            "p": mcnemar_exact(only_arm, only_ref) if both else None}


def comparisons(grouped: dict[tuple[str, int, str], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every arm but the reference against the reference (scratch) at the same task and demo count."""
    out = []
    for (task, n, arm), runs in grouped.items():
        if arm == REFERENCE_ARM:
            continue
        ref = grouped.get((task, n, REFERENCE_ARM), [])
        out.append({"task": task, "n_demos": n, "arm": arm, "ref": REFERENCE_ARM, **paired(runs, ref)})
    return out


def summarise(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(groups, comparisons) of a list of run records."""
    grouped = group_runs(runs)
    return [group_summary(*key, rs) for key, rs in grouped.items()], comparisons(grouped)


def build_doc(runs: list[dict[str, Any]], notes: list[str], source: str) -> dict[str, Any]:
    groups, comps = summarise(runs)
    return {"schema": SCHEMA, "source": source, "reference_arm": REFERENCE_ARM, "groups": groups,
            "comparisons": comps, "notes": notes, "runs": runs}


def recompute(doc: dict[str, Any]) -> dict[str, Any]:
    """A saved document with its groups and comparisons recomputed from its runs (what is drawn is what the
    runs say, whatever an edit did to the summary)."""
    if doc.get("schema") != SCHEMA or not isinstance(doc.get("runs"), list):
        raise ValueError(f"not a transfer report (schema {SCHEMA!r} with runs)")
    groups, comps = summarise(doc["runs"])
    return {**doc, "groups": groups, "comparisons": comps}
