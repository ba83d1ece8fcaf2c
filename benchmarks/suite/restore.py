"""Put the runs of a published results.json back into a suite directory, so that new runs join them.

    python -m benchmarks.suite restore RESULTS_JSON [out=DIR]

A results.json committed under benchmarks/results/suites/ keeps every run's result.json, its per-episode
outcomes included, but none of the checkpoints or logs. This writes each run's result.json (marked
`restored_from`) and spec.json back under out/runs/<task>/<variant>/seed<S>/, merges the suite definition
and the invocations into out/, and rewrites out's results.json and table. A later
`python -m benchmarks.suite SUITE policies=...` into the same out then keeps the restored runs (finished
runs are not redone) and adds its own beside them: one table, one set of paired comparisons. This is how
a policy is compared with the published rows without training them again (and how a new session carries
on a suite whose checkpoints did not survive).

What cannot come back: the checkpoints. So `latency OUT` keeps a restored run's earlier measurement (the
table then names each measurement pass), and the runner regenerates a task's demo store with the suite's
own command; the table's protocol check compares its sha256 with the restored runs' store.
Nothing is overwritten: a run directory that already holds a result.json is left as it is. A run whose
demo store is already in out with other contents (a store regenerated with other bytes) is not restored:
new runs there would not see its demos, so it is named, to be run again.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.suite import records
from benchmarks.suite.processes import shown
from benchmarks.suite.records import REPO

USAGE = "usage: python -m benchmarks.suite restore RESULTS_JSON [out=DIR]"
DEFINITION_KEYS = ("suite", "description", "budget", "budget_spec", "multitask", "tasks", "variants",
                   "eval_seed_offset")


def merged_variants(current: dict[str, list[str]], restored: dict[str, list[str]], suite: str) -> dict:
    """Both variant tables, in the suite's order where the suite is known (the table lists them so)."""
    from benchmarks.suite.suites import SUITES

    both = {**restored, **current}
    known = list(SUITES[suite].known_variants()) if suite in SUITES else []
    order = [v for v in known if v in both] + [v for v in both if v not in known]
    return {v: both[v] for v in order}


def restore(results_json: Path, out: Path | None = None, echo=print) -> dict[str, int]:
    """Write the runs of `results_json` into `out`; returns how many were written and kept."""
    from benchmarks.suite.results import collect
    from benchmarks.suite.tables import write_report

    doc = records.read_json(results_json)
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list) or not doc.get("suite"):
        raise ValueError(f"{results_json}: not a suite results.json (no suite name and runs list)")
    out = Path(out or REPO / "outputs" / "suites" / f"{doc['suite']}-{doc.get('budget', 'cpu')}").resolve()
    if out == Path(results_json).resolve().parent:
        raise ValueError(f"out= is the folder of {results_json}; restore into a suite output directory")
    current = records.read_json(out / "suite.json")
    if current and (current.get("suite"), current.get("budget")) != (doc["suite"], doc.get("budget")):
        raise ValueError(f"{out} holds suite {current.get('suite')} (budget={current.get('budget')}), "
                         f"{results_json} is {doc['suite']} (budget={doc.get('budget')}); pass another out=")
    definition = {k: doc[k] for k in DEFINITION_KEYS if k in doc}
    if current:
        definition = {**definition, **current,
                      "variants": merged_variants(current.get("variants", {}), doc.get("variants", {}),
                                                  doc["suite"])}
    records.write_json(out / "suite.json", definition)

    source = shown(results_json)
    written = kept = skipped = 0
    here: dict[str, str | None] = {}  # store path -> sha256 of the store of that name in out, if one is there
    for run in doc["runs"]:
        key, rdir = records.run_key(run["task"], run["variant"], run["seed"]), \
            records.run_dir(out, run["task"], run["variant"], run["seed"])
        if (rdir / "result.json").exists():
            echo(f"= {key}: {rdir / 'result.json'} exists, kept")
            kept += 1
            continue
        store = run["store"]["path"]
        if store not in here:
            here[store] = records.store_sha256(out / store) if (out / store / "zarr.json").is_file() else None
        if here[store] is not None and here[store] != run["store"].get("sha256"):
            # new runs here train on other demos: restoring this one would compare unlike with unlike
            echo(f"- {key}: trained on another {store} (sha256 {str(run['store'].get('sha256'))[:12]}, here "
                 f"{here[store][:12]}), not restored: run it again here")
            skipped += 1
            continue
        records.write_json(rdir / "spec.json", {"config_hash": run["config_hash"], "key": key})
        records.write_json(rdir / "result.json", {**run, "restored_from": source})
        echo(f"+ {key}: restored")
        written += 1

    seen = {(i.get("time"), i.get("command")) for i in records.read_jsonl(out / "invocations.jsonl")}
    for inv in doc.get("invocations", []):
        if (inv.get("time"), inv.get("command")) not in seen:
            records.append_jsonl(out / "invocations.jsonl", inv)
    write_report(out, collect(out))
    echo(f"{written} run(s) restored into {out}, {kept} kept as they were, {skipped} not restored (other "
         "demos); results.json and table.md rewritten")
    return {"written": written, "kept": kept, "skipped": skipped}


def main(argv: list[str]) -> int:
    from data.cli_args import key_values

    if not argv or "=" in argv[0]:
        raise ValueError(USAGE)
    opts = key_values(argv[1:], ("out",), USAGE)
    path = Path(argv[0])
    if not path.is_file():
        raise ValueError(f"{path}: no such file; {USAGE}")
    restore(path, Path(opts["out"]) if "out" in opts else None)
    return 0
