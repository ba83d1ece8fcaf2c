"""A suite's results: results.json (the schema below), collected from its run directories, and the runs
grouped per (task, policy) with seeds pooled. benchmarks/suite/tables.py renders them.

results.json = the suite definition (suite.json: suite, description, budget, budget_spec, multitask,
tasks, variants, eval_seed_offset) + {"schema", "invocations": [{time, command, git_commit, git_dirty,
policies, seeds}], "stores": [{path, n_episodes, sha256, generated}, ...] (each distinct store the runs
used: one per task, or more where seeds were added on a store regenerated with other bytes),
"runs": [result.json of each run]}.
Each task may carry a target {success, source}: the level its recipe should reach. A run
(benchmarks/suite/runner.py writes it) holds: task, variant, seed, config_hash, git_commit,
git_dirty, store {path, n_episodes, sha256, generated: {time, command, git, machine} or null},
machine {python, packages, cpu, cpu_flags_sha256, cpu_count}, train {run_dir, steps, commands, segments,
wall_s}, eval_wall_s, cost {params_total, params_active, flops_per_chunk, latency_b1_ms, latency_device,
latency_threads}, codebook (last logged code usage or null) and eval {"last", "best"}: {checkpoint,
command, eval_info, success_rate, success_ci95, n_success, n_episodes, n_errors, per_task, seeds (digest),
global_step, [monitor, monitor_value, same_as], sampling_noise, outcomes: [[seed, 0|1], ...] read by
collect}, train_config (the resolved config it trained with, flat; benchmarks/suite/resolved.py), and
when evaluated again by `rescore=true`, rescored {git_commit, git_dirty, time, before: {last, best:
{n_success, n_episodes}}}; a run put back by benchmarks/suite/restore.py also has restored_from. Rates
pooled over seeds get a fresh Wilson 95% interval here.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.suite import records
from rollouts.stats import wilson_interval

SCHEMA = 1


def finished_runs(out: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(result.json path, its document) of every complete run under out/runs/."""
    found = [(p, records.read_json(p)) for p in sorted(out.glob("runs/*/*/seed*/result.json"))]
    return [(p, r) for p, r in found if r and r.get("complete")]


def with_outcomes(out: Path, run: dict[str, Any]) -> dict[str, Any]:
    """The run with each evaluation's per-episode outcomes, [[seed, 0|1], ...] by seed, read from its
    eval_info.json: what paired comparisons between policies need (the same seeds, episode by episode)."""
    for summary in run["eval"].values():
        info = records.read_json(out / summary["eval_info"]) if summary and summary.get("eval_info") else None
        if info:
            summary["outcomes"] = sorted([int(e["seed"]), int(bool(e["success"]))] for e in info["episodes"])
    return run


def with_start(result_path: Path, run: dict[str, Any]) -> dict[str, Any]:
    """The run with `started` (its first command's time) read from its commands.jsonl when its result.json
    predates that field: what `tables.producers` needs to tell the invocation that made it from earlier ones."""
    if not run.get("started"):
        times = [c["time"] for c in records.read_jsonl(result_path.parent / "commands.jsonl") if c.get("time")]
        if times:
            run["started"] = min(times)
    return run


def collect(out: Path) -> dict[str, Any]:
    """results.json's document from a suite directory: every complete run found under runs/."""
    definition = records.read_json(out / "suite.json") or {}
    runs = sorted((with_start(p, with_outcomes(out, r)) for p, r in finished_runs(out)), key=run_order(definition))
    return {"schema": SCHEMA, **definition, "invocations": records.read_jsonl(out / "invocations.jsonl"),
            "stores": list({(r["store"]["path"], r["store"].get("sha256")): r["store"] for r in runs}.values()),
            "runs": runs}


def run_order(definition: dict[str, Any]) -> Callable[[dict[str, Any]], tuple]:
    """Sort key of runs: the suite's task order, then its variant order (the first is every paired
    comparison's reference), then the seed."""
    tasks, variants = [t["name"] for t in definition.get("tasks", [])], list(definition.get("variants", {}))

    def rank(r: dict[str, Any]) -> tuple:
        t = tasks.index(r["task"]) if r["task"] in tasks else len(tasks)
        v = variants.index(r["variant"]) if r["variant"] in variants else len(variants)
        return t, r["task"], v, r["variant"], r["seed"]

    return rank


def pooled(evals: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Successes summed over seeds, with the Wilson 95% interval of the pool, overall and per task."""
    if not evals:
        return None

    def pool(items: list[dict[str, Any]]) -> dict[str, Any]:
        k, n = sum(e["n_success"] for e in items), sum(e["n_episodes"] for e in items)
        return {"success_rate": k / n if n else 0.0, "success_ci95": list(wilson_interval(k, n)),
                "n_success": k, "n_episodes": n}

    names = list(evals[0]["per_task"])
    return {**pool(evals), "per_seed": [e["success_rate"] for e in evals],
            "per_task": {t: pool([e["per_task"][t] for e in evals if t in e["per_task"]]) for t in names}}


def latency_pass(run: dict[str, Any]) -> str:
    """When `python -m benchmarks.suite latency` last timed the run; "" = right after its training."""
    return run["cost"].get("latency_measured") or ""


def groups(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per (task, variant) in the document's order, its seeds pooled."""
    keyed: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in doc["runs"]:
        keyed.setdefault((r["task"], r["variant"]), []).append(r)
    out = []
    for (task, variant), runs in keyed.items():
        # latencies compare within one pass: a row's is its first seed's pass (median over its runs timed in
        # that pass), so seeds added later, timed in another pass or under load, do not mix into it
        same_pass = [r for r in runs if latency_pass(r) == latency_pass(runs[0])]
        codebook: dict[str, float] = {}
        for key in sorted({k for r in runs for k in (r.get("codebook") or {})}):
            values = [r["codebook"][key] for r in runs if key in (r.get("codebook") or {})]
            codebook[key] = statistics.fmean(values)
        out.append({
            "task": task, "variant": variant, "seeds": [r["seed"] for r in runs],
            "last": pooled([r["eval"]["last"] for r in runs]),
            "best": pooled([r["eval"]["best"] for r in runs if r["eval"].get("best")]),
            "params_total": runs[0]["cost"]["params_total"], "params_active": runs[0]["cost"]["params_active"],
            "flops_per_chunk": runs[0]["cost"]["flops_per_chunk"],
            "latency_b1_ms": statistics.median(r["cost"]["latency_b1_ms"] for r in same_pass),
            "latency_device": f"{runs[0]['cost']['latency_device']} ({runs[0]['cost']['latency_threads']} thread"
                              f"{'s' if runs[0]['cost']['latency_threads'] > 1 else ''})",
            "latency_method": runs[0]["cost"].get("latency_method", "right after its training"),
            "latency_pass": latency_pass(runs[0]),
            "steps": runs[0]["train"]["steps"],
            # a run that recorded no training segment (its commands.jsonl was lost) has no known time
            "train_wall_s": statistics.fmean([r["train"]["wall_s"] for r in runs
                                              if r["train"].get("segments") != 0] or [0.0]),
            "codebook": codebook or None,
        })
    return out
