"""Give the runs of a published results.json the variant name that now means what they trained with.

    python -m benchmarks.suite relabel RESULTS_JSON OLD=NEW [OLD=NEW ...] then=KEY=VALUE [...] why="..."

A variant name is a set of train.py overrides on top of the defaults. When a default changes (MoDE's
`policy.sample_routes` became false), the runs a variant trained before still hold the old setting, and
under their old name they would pool with, and be compared as, runs of the new default. Relabelling
moves such runs to the variant that names their setting today (`mode=mode-drawn`, `mode-topk=mode`),
or keeps the name and re-keys the run where its variant now names the old default explicitly
(`mode-linear=mode-linear`). `then=KEY=VALUE` says what a changed default was when the runs trained
(`then=policy.sample_routes=true`; the commit that changed it shows it).

A run moves only if the train command it ran (paths left out) and the one its new variant gives now
differ in nothing but the keys of `then=`; if each such key, as the run trained it (named on its
command, else the `then=` default), is what the new variant resolves to now; and, where the run kept its
resolved `train_config`, if all of that equals the new variant's. Its config hash becomes the new
variant's (so a restored run resumes and gains seeds under its new name), its commands stay as they
were run, and it keeps a `relabeled` record: the old name and hash, what it trained with, `why`, and the
commit that did it. The mappings apply at once, so OLD=NEW pairs may swap names.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.suite import records, resolved

USAGE = ('usage: python -m benchmarks.suite relabel RESULTS_JSON OLD=NEW [OLD=NEW ...] then=KEY=VALUE '
         '[then=KEY=VALUE ...] why="..."')


def train_overrides(command: list[str]) -> list[str]:
    """The overrides after train.py in a train command, less the ones that only place files."""
    script = next(i for i, a in enumerate(command) if a.endswith("train.py"))
    return [a for a in command[script + 1:] if not a.startswith(records.PATH_ARGS)]


def named(overrides: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in overrides if "=" in a)


def relabel(doc: dict[str, Any], mapping: dict[str, str], then: dict[str, str], why: str) -> int:
    """Relabel `doc`'s runs in place; returns how many moved. `then`: the defaults of the changed keys when
    the runs trained (as typed on a command line). A ValueError names the first run that may not move."""
    from benchmarks.suite.results import run_order
    from benchmarks.suite.runner import SuiteRunner
    from benchmarks.suite.suites import get_suite, hydra_value

    suite = get_suite(doc["suite"])
    known = suite.known_variants()
    unknown = sorted({n for n in mapping.values() if n not in known})
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown} for suite {suite.name}; choose from {', '.join(known)}")
    runner = SuiteRunner(suite, budget=doc["budget"], policies=sorted(set(mapping.values())), dry_run=True,
                         echo=lambda _: None)
    stamp = {**records.git_state(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    moves = []
    for run in doc["runs"]:
        if run["variant"] not in mapping:
            continue
        key = records.run_key(run["task"], run["variant"], run["seed"])
        task, variant = suite.select_tasks([run["task"]])[0], known[mapping[run["variant"]]]
        argv = runner.train_argv(task, variant, run["seed"], Path("x"))
        resolved_now = resolved.train_config([sys.executable, *argv[1:]])
        if run["train"]["commands"]:
            ran, now = train_overrides(shlex.split(run["train"]["commands"][0])), train_overrides(argv)
            rest = sorted({a for a in set(ran) ^ set(now) if a.partition("=")[0] not in then})
            if rest:
                raise ValueError(f"{key}: its train command and {variant.name}'s differ in {', '.join(rest)}, "
                                 f"beyond the keys of then= ({', '.join(sorted(then))}): not the same training")
            trained_with = {k: named(ran).get(k, v) for k, v in then.items()}  # named on its command, or the default
        elif run.get("train_config"):  # no command recorded: its resolved config says what it trained with
            trained_with = {k: hydra_value(run["train_config"].get(k)) for k in then}
        else:
            raise ValueError(f"{key}: records neither its train command nor its resolved config: nothing to check")
        off = [f"{k}: trained {v}, {variant.name} gives {hydra_value(resolved_now.get(k))}"
               for k, v in trained_with.items() if hydra_value(resolved_now.get(k)) != v]
        if off:
            raise ValueError(f"{key}: not what {variant.name} trains now: {'; '.join(off)}")
        if run.get("train_config"):
            changes = resolved.config_changes(resolved_now, run["train_config"])
            if changes:
                raise ValueError(f"{key}: trained with another resolved config than {variant.name} gives now: "
                                 f"{'; '.join(changes[:5])}")
        moves.append((run, variant.name, runner.config_hash(task, variant, run["seed"]), trained_with))
    for run, name, config_hash, trained_with in moves:
        record = {"from": run["variant"], "config_hash_before": run["config_hash"], "trained_with": trained_with,
                  "why": why, **stamp}
        run.update(variant=name, config_hash=config_hash, relabeled=[*run.get("relabeled", []), record])
    # the variant table: every name a run now has, and the others it listed that were not relabelled away,
    # in the suite's order, each with the overrides it stands for today
    old, used, order = doc.get("variants", {}), {r["variant"] for r in doc["runs"]}, list(known)
    names = [n for n in {**old, **dict.fromkeys(mapping.values())} if n in used or n not in mapping]
    names.sort(key=lambda n: order.index(n) if n in order else len(order))
    doc["variants"] = {n: list(known[n].overrides(doc["budget"])) if n in known else old[n] for n in names}
    doc["runs"].sort(key=run_order(doc))  # the default's runs first again: the paired comparisons' reference
    return len(moves)


def main(argv: list[str]) -> int:
    if not argv or "=" in argv[0]:
        raise ValueError(USAGE)
    path, mapping, then, why = Path(argv[0]), {}, {}, ""
    for item in argv[1:]:
        name, sep, value = item.partition("=")
        if not sep or not value:
            raise ValueError(f"expected OLD=NEW, then=KEY=VALUE or why=, got {item!r}; {USAGE}")
        if name == "then":
            k, sep, v = value.partition("=")
            if not sep or not v:
                raise ValueError(f"then= takes KEY=VALUE (a default when the runs trained), got {value!r}")
            then[k] = v
        elif name == "why":
            why = value
        else:
            mapping[name] = value
    if not mapping or not then or not why:
        raise ValueError(f"give at least one OLD=NEW, a then= and a why=; {USAGE}")
    doc = records.read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list) or not doc.get("suite"):
        raise ValueError(f"{path}: not a suite results.json (no suite name and runs list)")
    moved = relabel(doc, mapping, then, why)
    records.write_json(path, doc)
    print(f"{moved} run(s) relabelled in {path}; `python -m benchmarks.suite report {path.parent}` redraws its "
          "table")
    return 0
