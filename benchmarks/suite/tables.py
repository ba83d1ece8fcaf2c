"""A suite's report from its results.json alone: table.md (or the README block) with the targets, paired
comparisons, protocol checks and the commands that produced it, and the plots beside it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from benchmarks.suite import records
from benchmarks.suite.results import groups
from rollouts.plan import PER_EPISODE_NOISE
from rollouts.stats import mcnemar_exact


def fmt_rate(s: dict[str, Any] | None) -> str:
    if s is None:
        return "—"
    lo, hi = s["success_ci95"]
    return f"{s['success_rate']:.2f} [{lo:.2f}, {hi:.2f}]"


def fmt_count(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.0f}"


def fmt_minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


TABLE_COLUMNS = ("task", "policy", "success, last EMA [95% CI]", "success, best val [95% CI]", "episodes",
                 "seeds", "per seed (last)", "params total / active", "FLOPs / chunk", "latency b=1",
                 "steps", "train time / run")


def latency_passes(doc: dict[str, Any]) -> list[str]:
    """The distinct latency passes of the table ("" = measured right after training), oldest first:
    latencies compare within one pass (one process, one machine state), not across."""
    return sorted({g["latency_pass"] for g in groups(doc)})


def latency_cell(g: dict[str, Any], passes: list[str]) -> str:
    cell = f"{g['latency_b1_ms']:.1f} ms"
    return cell if len(passes) < 2 else f"{cell} (p{passes.index(g['latency_pass']) + 1})"


def table_lines(doc: dict[str, Any]) -> list[str]:
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    passes = latency_passes(doc)
    for g in groups(doc):
        last = g["last"]
        cells = [g["task"], g["variant"], fmt_rate(last), fmt_rate(g["best"]), str(last["n_episodes"]),
                 str(len(g["seeds"])), ", ".join(f"{r:.2f}" for r in last["per_seed"]),
                 f"{fmt_count(g['params_total'])} / {fmt_count(g['params_active'])}",
                 fmt_count(g["flops_per_chunk"]), latency_cell(g, passes), str(g["steps"]),
                 fmt_minutes(g["train_wall_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def per_task_lines(doc: dict[str, Any]) -> list[str]:
    """Multitask suites: one row per env task, one column per (suite task, variant): last-EMA success."""
    gs = [g for g in groups(doc) if len(g["last"]["per_task"]) > 1]
    if not gs:
        return []
    label = (lambda g: g["variant"]) if len({g["task"] for g in gs}) == 1 else (lambda g: f"{g['task']} {g['variant']}")
    names = list(dict.fromkeys(t for g in gs for t in g["last"]["per_task"]))
    lines = ["| env task | " + " | ".join(label(g) for g in gs) + " |", "|" + "---|" * (len(gs) + 1)]
    for t in names:
        cells = [f"{s['success_rate']:.2f}" if (s := g["last"]["per_task"].get(t)) and s["n_episodes"] else "—"
                 for g in gs]  # — : not evaluated (fewer episodes than tasks)
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines


def codebook_lines(doc: dict[str, Any]) -> list[str]:
    rows = []
    for g in groups(doc):
        for key, value in (g["codebook"] or {}).items():
            camera, _, metric = key.rpartition("/")
            rows.append(f"| {g['task']} | {g['variant']} | {camera} | {metric} | {value:.4g} |")
    if not rows:
        return []
    return ["| task | policy | camera | metric (last logged, mean over seeds) | value |", "|---|---|---|---|---|",
            *rows]


def target_lines(doc: dict[str, Any]) -> list[str]:
    """Each task's target (suite.json) against every policy's last-EMA success: reached when the rate is at
    or above it; below it but inside the 95% interval is said so (more episodes or seeds would tell)."""
    targets = {t["name"]: t["target"] for t in doc.get("tasks", []) if t.get("target")}
    out = []
    for task, target in targets.items():
        verdicts = []
        for g in (g for g in groups(doc) if g["task"] == task):
            rate, hi = g["last"]["success_rate"], g["last"]["success_ci95"][1]
            verdict = "reached" if rate >= target["success"] else \
                "below, target inside the 95% interval" if hi >= target["success"] else "not reached"
            verdicts.append(f"{g['variant']} {fmt_rate(g['last'])} {verdict}")
        if verdicts:
            out.append(f"- {task}: target {target['success']:.2f} ({target['source']}); " + "; ".join(verdicts))
    return out


def paired_counts(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every policy of a task against the task's first one (MoDE in the standard order), episode by
    episode on the evaluation seeds both ran (last EMA weights, training seeds matched): the successes
    only one of them had, and the exact McNemar p-value of that split (None: no training seed in common)."""
    out = []
    by_task: dict[str, dict[str, dict[tuple[int, int], int]]] = {}
    for r in doc["runs"]:
        outcomes = r["eval"]["last"].get("outcomes")
        if outcomes:
            by_task.setdefault(r["task"], {}).setdefault(r["variant"], {}).update(
                {(r["seed"], seed): ok for seed, ok in outcomes})
    for task, variants in by_task.items():
        (ref, ref_eps), *others = variants.items()
        for name, eps in others:
            both = sorted(ref_eps.keys() & eps.keys())
            only_ref = sum(ref_eps[k] and not eps[k] for k in both)
            only_other = sum(eps[k] and not ref_eps[k] for k in both)
            out.append({"task": task, "name": name, "ref": ref, "n": len(both),
                        "successes": sum(eps[k] for k in both), "ref_successes": sum(ref_eps[k] for k in both),
                        "only": only_other, "only_ref": only_ref,
                        "p": mcnemar_exact(only_other, only_ref) if both else None})
    return out


def paired_lines(doc: dict[str, Any]) -> list[str]:
    out = []
    for c in paired_counts(doc):
        task, name, ref = c["task"], c["name"], c["ref"]
        if not c["n"]:  # e.g. a row trained only at seeds the other lacks: nothing to pair
            out.append(f"- {task}: {name} vs {ref}: no training seed in common, not paired")
            continue
        out.append(f"- {task}: {name} vs {ref} on {c['n']} paired episodes: {c['successes']} vs "
                   f"{c['ref_successes']} successes; only {name} {c['only']}, only {ref} "
                   f"{c['only_ref']}; McNemar exact p = {c['p']:.3g}")
    return out


def check_lines(doc: dict[str, Any]) -> list[str]:
    """The protocol, checked: at each training seed every policy of a task saw the same store, and every
    run the same evaluation seeds. Seeds may differ in their demos (a store regenerated on another machine
    can differ in its bytes): that is part of what varies between seeds, not between policies."""
    out = []
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in doc["runs"]:
        by_task.setdefault(r["task"], []).append(r)
    for task, runs in by_task.items():
        stores: dict[int, set[str]] = {}
        for r in runs:
            stores.setdefault(r["seed"], set()).add(r["store"].get("sha256") or "")
        seeds = {r["eval"]["last"]["seeds"]["sha256"] for r in runs}
        same = all(len(s) == 1 for s in stores.values())
        ok = same and len(seeds) == 1
        distinct = {s for ss in stores.values() for s in ss}
        if len(distinct) == 1:
            named = f"sha256 {next(iter(distinct))[:12]}"
        else:
            named = "; ".join(f"seed {seed}: sha256 {', '.join(x[:12] for x in sorted(s))}"
                              for seed, s in sorted(stores.items()))
        out.append(f"- {task}: {'same' if same else 'DIFFERENT'} demo store for every policy "
                   f"{'at each training seed ' if len(stores) > 1 else ''}({named}), "
                   f"{'same' if len(seeds) == 1 else 'DIFFERENT'} evaluation seeds"
                   f"{'' if ok else ' — the comparison is not like for like'}; {noise_text(runs)}")
    return out


def noise_text(runs: list[dict[str, Any]]) -> str:
    """How the runs' evaluations drew their sampling noise (rollouts/plan.py Plan.sampling_noise): one
    generator per episode, or the shared stream, whose draws went to the episodes in the order the workers'
    replies came, so that the same weights scored differently from one evaluation to the next."""
    shared = [r for r in runs if any(records.sampling_noise(s) != PER_EPISODE_NOISE
                                     for s in r["eval"].values() if s)]
    if not shared:
        return "sampling noise per episode"
    if len(shared) == len(runs):
        return "sampling noise from the shared stream (scores vary between evaluations of the same weights)"
    named = ", ".join(f"{r['variant']} seed {r['seed']}" for r in shared)
    return f"sampling noise per episode, except the shared stream for {named}"


def relabel_lines(doc: dict[str, Any]) -> list[str]:
    """One line per relabelling (benchmarks/suite/relabel.py): which runs, from which name, what they
    trained with, and why."""
    moved: dict[tuple, list[str]] = {}
    for r in doc["runs"]:
        for rec in r.get("relabeled", []):
            what = ", ".join(f"{k}={v}" for k, v in rec["trained_with"].items())
            moved.setdefault((rec["from"], r["variant"], what, rec["why"]), []).append(f"{r['task']} seed {r['seed']}")
    return [f"- {old + ' → ' + new if old != new else new + ' (name kept: its variant now sets this)'} "
            f"({'; '.join(runs)}): trained with {what}; {why}" for (old, new, what, why), runs in moved.items()]


def has_heatmap(doc: dict[str, Any]) -> bool:
    return bool(doc.get("multitask")) or any(len(g["last"]["per_task"]) > 1 for g in groups(doc))


def steps_text(steps: int | None) -> str:
    return "each task's recipe steps (`train_steps` in its conf/task file; column *steps*)" if steps is None \
        else f"{steps} steps"


def asked_for(invocation: dict[str, Any], run: dict[str, Any]) -> bool:
    """Whether an invocation asked for this run: its policies and seeds are recorded, its tasks are the
    command's tasks= (none: all); a relabelled run was asked for under its earlier name."""
    if not invocation.get("command"):
        return False
    asked = [a.partition("=")[2] for a in shlex.split(invocation["command"]) if a.startswith("tasks=")]
    # the run's name when the invocation was made: before a relabelling, the name it moved from
    then = next((r["from"] for r in run.get("relabeled", []) if (invocation.get("time") or "") < r["time"]),
                run["variant"])
    return (not asked or run["task"] in asked[-1].split(",")) and then in invocation.get("policies", ()) \
        and run["seed"] in invocation.get("seeds", ())


def producers(doc: dict[str, Any]) -> list[str]:
    """The suite commands that made the finished runs, in the order they were run. For a run that records
    when its first command started, the last invocation asking for it before then (the one that started
    it) and any that resumed it before it finished; otherwise every invocation that asked for it before it
    finished. An interrupted invocation whose run was later made again by another is not one."""
    invocations = [i for i in doc.get("invocations", []) if i.get("command")]
    chosen: set[int] = set()
    for run in doc["runs"]:
        finished, started = run.get("created") or "9999", run.get("started")
        asking = [k for k, i in enumerate(invocations) if asked_for(i, run) and (i.get("time") or "") <= finished]
        if started:
            before = [k for k in asking if (invocations[k].get("time") or "") <= started]
            asking = before[-1:] + [k for k in asking if (invocations[k].get("time") or "") > started]
        chosen.update(asking)
    in_time = sorted(chosen, key=lambda k: (invocations[k].get("time") or "", k))  # restored ones came later
    return list(dict.fromkeys(invocations[k]["command"] for k in in_time))


def passes_text(doc: dict[str, Any]) -> str:
    passes = latency_passes(doc)
    if len(passes) < 2:
        return ""
    named = ", ".join(f"p{i + 1} {p[:16].replace('T', ' ') or 'right after training'}" for i, p in enumerate(passes))
    return f", in {len(passes)} passes ({named}): compare latencies within one pass"


def folded(summary: str, lines: list[str]) -> list[str]:
    """Lines inside a closed <details> block (the blank lines let the code host render Markdown inside)."""
    return [f"<details><summary>{summary}</summary>", "", *lines, "", "</details>", ""]


def render(doc: dict[str, Any], image_prefix: str = "", heading: str = "#", fold: bool = False) -> str:
    """table.md (or, with another prefix and heading level, a block of docs/results.md) for one suite.
    fold=True closes the per-task table and the provenance (relabellings, protocol checks, producing
    commands) into <details> blocks, so a page of several suites stays scannable."""
    spec = doc.get("budget_spec", {})
    def commit(rec: dict[str, Any]) -> str:
        return f"{(rec.get('git_commit') or '?')[:10]}{' (dirty)' if rec.get('git_dirty') else ''}"

    # the code that trained each run and, for a rescored run, the code that evaluated it again
    commits = sorted({commit(r) for r in doc["runs"]}
                     | {f"{commit(r['rescored'])} (rescore)" for r in doc["runs"] if r.get("rescored")})
    commands = producers(doc)
    parts = [f"{heading} {doc.get('suite', '?')} (budget={doc.get('budget', '?')})", "",
             doc.get("description", ""), "",
             f"Per run: {steps_text(spec.get('steps'))} of batch {spec.get('batch_size')}, "
             f"{spec.get('eval_episodes')} evaluation episodes on held-out seeds from "
             f"{doc.get('eval_seed_offset', 1_000_000):,} (the same for every policy). Success is pooled over "
             "training seeds with a Wilson 95% interval; *last EMA* = checkpoints/last.ckpt, *best val* = the "
             "top-1 checkpoint by val/loss. FLOPs per action chunk at batch 1; latency on "
             f"{', '.join(sorted({g['latency_device'] for g in groups(doc)})) or '?'}, measured "
             f"{'; '.join(sorted({g['latency_method'] for g in groups(doc)})) or '?'}"
             " (`python -m benchmarks.suite latency OUT`)" + passes_text(doc) + ".", "",
             *table_lines(doc), ""]
    parts += [f"![success per policy]({image_prefix}success.png)", ""]
    if has_heatmap(doc):
        parts += [f"![success per task]({image_prefix}heatmap.png)", ""]
    if lines := per_task_lines(doc):
        title = "Success per env task (last EMA weights, pooled over seeds)"
        parts += folded(title, lines) if fold else [f"{title}:", "", *lines, ""]
    if lines := codebook_lines(doc):
        parts += ["Codebook usage (training logs):", "", *lines, ""]
    if lines := target_lines(doc):
        parts += ["Targets per task (last EMA weights; the same targets whatever the budget):", "", *lines, ""]
    if lines := paired_lines(doc):
        parts += ["Paired comparisons (same evaluation seeds, last EMA weights):", "", *lines, ""]
    provenance = []
    if lines := relabel_lines(doc):
        provenance += ["Relabelled runs (named by the variant that trains as they did; their commands as run):",
                       "", *lines, ""]
    provenance += ["Protocol checks:", "", *check_lines(doc), "",
                   "Produced by " + (", ".join(f"`{c}`" for c in commands) or "?")
                   + f" at {', '.join(commits) or '?'}.", ""]
    parts += folded("Provenance: relabelled runs, protocol checks, producing commands", provenance[:-1]) \
        if fold else provenance
    return "\n".join(parts)


def write_report(out: Path, doc: dict[str, Any], write_doc: bool = True) -> dict[str, Path]:
    """results.json (unless regenerating from it), table.md, success.png and, for multitask suites,
    heatmap.png in `out`."""
    from benchmarks.suite.plots import heatmap_plot, success_plot

    paths: dict[str, Path] = {}
    if write_doc:
        paths["results"] = records.write_json(out / "results.json", doc)
    if not doc["runs"]:
        return paths
    paths["success"] = success_plot(doc, out / "success.png")
    if has_heatmap(doc):
        paths["heatmap"] = heatmap_plot(doc, out / "heatmap.png")
    (out / "table.md").write_text(render(doc))
    paths["table"] = out / "table.md"
    return paths
