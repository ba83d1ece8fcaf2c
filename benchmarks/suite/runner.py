"""Run a suite: per suite task one demo store shared by every policy, then per (task, variant, seed)
`python train.py ...` and `python eval_rollouts.py ...` as subprocesses from the repo root, both the
final EMA weights (checkpoints/last.ckpt) and the best-by-validation checkpoint, on the same held-out
evaluation seeds for every policy.

Layout of `out`:
    datasets/<store>-<n>.zarr            generated once, reused by every run (hash in results.json)
    datasets/<store>-<n>.generated.json  when, by which command and on which machine it was generated
    runs/<task>/<variant>/seed<S>/       spec.json, train/ (the train.py run dir), eval-last/, eval-best/,
                                         *.log (subprocess output), commands.jsonl, result.json
    commands.jsonl                       every command run, with exit code, wall time and git commit
    results.json  table.md  success.png  heatmap.png (multitask)

Resume: a run whose result.json is complete is skipped; a training that stopped early continues with
`resume=<run dir>`; an evaluation whose eval_info.json matches its checkpoint is kept. A run restored
from a published results.json (benchmarks/suite/restore.py) whose store hash differs from the store here
is trained again (its result.json kept as result.restored.json). With `rescore=true`, a finished run
whose evaluations drew from the shared noise stream (made before eval_info.json recorded
`sampling_noise`) is evaluated again when its checkpoint is here; its earlier record stays beside it
(result.before-rescore.json, eval-*.before-rescore/).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.suite import records, resolved
from benchmarks.suite.processes import display, run_subprocess, shown, tail
from benchmarks.suite.records import REPO
from benchmarks.suite.suites import Budget, Suite, SuiteTask, Variant
from envs.seeds import EVAL_SEED_START

SCHEMA = 1
EVAL_SEED_OFFSET = EVAL_SEED_START  # the first held-out seed, passed explicitly so every command shows it
Executor = Callable[[list[str], Path], int]


class SuiteError(RuntimeError):
    """A problem the user can act on (a failed command, a run directory of another config): one message."""


class SuiteRunner:
    def __init__(self, suite: Suite, budget: str = "cpu", policies: list[str] | None = None,
                 seeds: list[int] | None = None, tasks: list[str] | None = None, out: str | Path | None = None,
                 dry_run: bool = False, rescore: bool = False,
                 execute: Executor = run_subprocess, echo: Callable[[str], None] = print,
                 command: str | None = None) -> None:
        self.suite, self.budget_name = suite, budget
        self.budget: Budget = suite.budget(budget)
        self.variants: list[Variant] = suite.select(policies or ["mode", "dit", "cnn"])
        self.seeds = tuple(seeds) if seeds else self.budget.seeds
        self.tasks = suite.select_tasks(tasks)
        self.out = Path(out or REPO / "outputs" / "suites" / f"{suite.name}-{budget}").resolve()
        from training.config_check import check_output_dir

        check_output_dir(self.out, "out")  # before the first command: a file, /dev/full/x, a long name (ValueError)
        self.dry_run, self.rescore, self.execute, self.echo = dry_run, rescore, execute, echo
        self.command = command
        self.git = records.git_state()

    # --- commands ----------------------------------------------------------------------------------
    def launch(self, argv: list[str], log: Path, phase: str, run_dir: Path | None = None) -> None:
        cmd = display(argv)
        self.echo(f"$ {cmd}")
        if self.dry_run:
            return
        t0, rc = time.time(), None
        try:
            rc = self.execute(argv, log)
        finally:  # an interrupted command is logged too (rc null): its time counts in the run's wall time
            rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)), "phase": phase,
                   "command": cmd, "log": shown(log), "rc": rc, "wall_s": round(time.time() - t0, 2), **self.git}
            records.append_jsonl(self.out / "commands.jsonl", rec)
            if run_dir is not None:
                records.append_jsonl(run_dir / "commands.jsonl", rec)
        if rc != 0:
            raise SuiteError(f"{phase} failed with exit code {rc}: {cmd}\n(last lines of {shown(log)}:)\n"
                             f"{tail(log)}\nfix the cause and rerun the same suite command: finished work is kept")

    # --- demo stores ------------------------------------------------------------------------------
    def store_path(self, task: SuiteTask) -> Path:
        return self.out / "datasets" / f"{task.store}-{task.demos(self.budget)}.zarr"

    def ensure_store(self, task: SuiteTask) -> dict[str, Any]:
        """Generate the task's store unless it already holds enough episodes; its path, size and hash."""
        from data.store import DemoStore, StoreError

        path, n = self.store_path(task), task.demos(self.budget)
        argv = [sys.executable, "-m", *task.generate, f"n_episodes={n}", f"out={shown(path)}"]

        def count() -> int:
            if not (path / "zarr.json").is_file():
                return 0
            try:
                return DemoStore.open(path).n_episodes
            except StoreError as err:
                raise SuiteError(f"{shown(path)}: {err}; delete it and rerun to regenerate it") from None

        provenance = path.with_suffix(".generated.json")  # beside the store: not part of its hash
        if count() < n:
            self.launch(argv, path.with_suffix(".log"), "generate")
            if not self.dry_run:
                records.write_json(provenance, {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": display(argv),
                                                **self.git, "machine": records.machine()})
        if self.dry_run:
            return {"path": path.relative_to(self.out).as_posix(), "n_episodes": n, "command": display(argv)}
        have = count()
        if have < n:
            raise SuiteError(f"{shown(path)} holds {have} episodes after generation, {n} wanted; see "
                             f"{shown(path.with_suffix('.log'))}")
        return {"path": path.relative_to(self.out).as_posix(), "n_episodes": have,
                "sha256": records.store_sha256(path), "command": display(argv),
                "generated": records.read_json(provenance)}  # None: made before the runner recorded it

    # --- one run ----------------------------------------------------------------------------------
    def run_dir(self, task: SuiteTask, variant: Variant, seed: int) -> Path:
        return records.run_dir(self.out, task.name, variant.name, seed)

    def train_argv(self, task: SuiteTask, variant: Variant, seed: int, train_dir: Path) -> list[str]:
        b = self.budget
        return [sys.executable, "train.py", *variant.overrides(self.budget_name), *task.train_task,
                f"task.dataset={shown(self.store_path(task))}", f"task.n_demos={task.demos(b)}",
                *task.train_overrides, *b.train_overrides, f"seed={seed}", f"trainer.max_steps={task.steps(b)}",
                f"trainer.val_check_interval={b.val_check_interval}", f"data.batch_size={b.batch_size}",
                "logger=csv", f"run_dir={shown(train_dir)}"]

    def eval_argv(self, task: SuiteTask, ckpt: Path | str, out: Path) -> list[str]:
        b = self.budget
        return [sys.executable, "eval_rollouts.py", f"checkpoint={ckpt if isinstance(ckpt, str) else shown(ckpt)}",
                f"out={shown(out)}", f"n_episodes={b.eval_episodes}", f"seed_offset={EVAL_SEED_OFFSET}",
                f"workers={b.eval_workers}", "video.n=0", "logger=none", "progress=false",
                *task.eval_overrides, *b.eval_overrides]

    def config_hash(self, task: SuiteTask, variant: Variant, seed: int) -> str:
        """What decides a run's numbers: its commands without the paths (which move with `out`)."""
        train = [a for a in self.train_argv(task, variant, seed, Path("x"))[1:] if not a.startswith(records.PATH_ARGS)]
        evals = [a for a in self.eval_argv(task, "x", Path("x"))[1:] if not a.startswith(records.PATH_ARGS)]
        text = json.dumps({"train": train, "eval": evals, "store": [*task.generate, task.demos(self.budget)]})
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def run_one(self, task: SuiteTask, variant: Variant, seed: int, store: dict[str, Any]) -> dict | None:
        rdir = self.run_dir(task, variant, seed)
        key, config_hash = records.run_key(task.name, variant.name, seed), self.config_hash(task, variant, seed)
        spec = records.read_json(rdir / "spec.json")
        if spec is not None and spec.get("config_hash") != config_hash:
            raise SuiteError(f"{shown(rdir)} holds a run of another configuration (config hash "
                             f"{spec.get('config_hash')}, this suite: {config_hash}); pass another out= or "
                             "delete that directory")
        done = records.read_json(rdir / "result.json")
        train_config = self.check_train_config(rdir, done, task, variant, seed)
        if done and done.get("complete") and done.get("restored_from") and store.get("sha256") \
                and done["store"].get("sha256") != store["sha256"]:
            # a published run (benchmarks/suite/restore.py) trained on other bytes than this store holds: its
            # numbers would not be like for like with the runs here, so it is trained again on these demos
            self.echo(f"- {key}: restored from {done['restored_from']}, but trained on another store (sha256 "
                      f"{str(done['store'].get('sha256'))[:12]}, here {store['sha256'][:12]}): trained again here")
            if not self.dry_run:
                os.replace(rdir / "result.json", rdir / "result.restored.json")
            done = None
        train_dir, steps = rdir / "train", task.steps(self.budget)
        last = train_dir / "checkpoints" / "last.ckpt"
        done, rescored = self.rescore_or_keep(key, rdir, done, last)
        if done and done.get("complete"):
            self.echo(f"= {key}: finished earlier, kept")
            return done
        self.echo(f"> {key}")
        if not self.dry_run:
            records.write_json(rdir / "spec.json", {"config_hash": config_hash, "key": key})
        step = records.global_step(last)
        if step is None or step < steps:
            for stale in () if self.dry_run else ("eval-last", "eval-best"):  # of weights about to change
                shutil.rmtree(rdir / stale, ignore_errors=True)
            argv = self.train_argv(task, variant, seed, train_dir)
            if step is not None:
                argv.append(f"resume={shown(train_dir)}")
            self.launch(argv, rdir / "train.out.log", "train", rdir)
            if self.dry_run:
                self.launch(self.eval_argv(task, last, rdir / "eval-last"), rdir / "eval-last.log", "eval")
                best = "<the top-1 checkpoints/stepNNNNNN.ckpt by val/loss>"
                self.launch(self.eval_argv(task, best, rdir / "eval-best"), rdir / "eval-best.log", "eval")
                return None
            step, rescored = records.global_step(last), None  # new weights: a full record, not a rescore
            if step != steps:
                raise SuiteError(f"{shown(train_dir)}: training ended at step {step}, not {steps}; see "
                                 f"{shown(rdir / 'train.out.log')}")
        evals = {"last": self.evaluate(task, rdir, "last", last, step)}
        best = records.best_checkpoint(last)
        if best is None:
            evals["best"] = None
        elif best["global_step"] == step:  # the same EMA weights as last.ckpt: the same numbers
            evals["best"] = {**evals["last"], "checkpoint": best["path"].relative_to(self.out).as_posix(),
                             "same_as": "last"}
        else:
            evals["best"] = self.evaluate(task, rdir, "best", best["path"], best["global_step"])
        if best is not None:
            evals["best"].update(monitor=best["monitor"], monitor_value=best["score"])
        return self.finish(task, variant, seed, rdir, config_hash, store, step, evals, train_config, rescored)

    def check_train_config(self, rdir: Path, done: dict | None, task: SuiteTask, variant: Variant,
                           seed: int) -> dict[str, Any] | None:
        """A SuiteError when the run in `rdir` trained with another resolved config than its command gives
        now (a default changed since it trained: the command line alone would not show it); else the
        config it gives now, or None when there is no run to compare with yet (it is composed at finish)."""
        trained = resolved.run_config(rdir / "train") or (done or {}).get("train_config")
        if not trained:
            return None
        now = resolved.train_config(self.train_argv(task, variant, seed, rdir / "train"))
        changes = resolved.config_changes(now, trained)
        if changes:
            raise SuiteError(f"{shown(rdir)} was trained with another resolved config, though with the same "
                             f"command line: {'; '.join(changes[:5])}{' ...' if len(changes) > 5 else ''} (a "
                             "default in conf/ or in a policy's config dataclass changed since); pass another "
                             "out= or delete that directory")
        return now

    def rescore_or_keep(self, key: str, rdir: Path, done: dict | None, last: Path) -> tuple[dict | None, dict | None]:
        """(the finished record to keep or None, the earlier record of a run to evaluate again or None).
        With `rescore`, a finished run scored with the shared noise stream is evaluated again, per episode,
        when its checkpoint is here: its result.json and eval directories are moved aside as
        *.before-rescore (the two scores stay side by side) and the runner goes on as for an evaluation cut
        short. A rescore cut short itself left result.before-rescore.json and no result.json: it goes on."""
        earlier = rdir / "result.before-rescore.json"
        if done is None or not done.get("complete"):
            return done, records.read_json(earlier)
        if not (self.rescore and records.predates_recorded_noise(done)):
            return done, None
        if records.global_step(last) != done["train"]["steps"]:
            why = f"restored from {done['restored_from']}" if done.get("restored_from") else "gone"
            self.echo(f"= {key}: scored with the shared noise stream, but its checkpoint is not here ({why}): kept")
            return done, None
        self.echo(f"~ {key}: scored with the shared noise stream; evaluated again, per episode")
        if self.dry_run:
            return done, None
        for which in ("eval-last", "eval-best"):
            if (rdir / which).is_dir() and not (rdir / f"{which}.before-rescore").exists():
                os.replace(rdir / which, rdir / f"{which}.before-rescore")
        os.replace(rdir / "result.json", earlier)
        return None, done

    def evaluate(self, task: SuiteTask, rdir: Path, which: str, ckpt: Path, step: int) -> dict[str, Any]:
        out = rdir / f"eval-{which}"

        def current() -> dict | None:  # an eval_info.json of exactly this checkpoint and budget
            info = records.read_json(out / "eval_info.json")
            # and made by an evaluation that records its sampling noise (an older one shared a noise stream
            # among the episodes, so its score depended on the workers' timing)
            if info and info.get("global_step") == step and Path(info.get("checkpoint", "")).name == ckpt.name \
                    and info["aggregate"]["n_episodes"] == self.budget.eval_episodes \
                    and "sampling_noise" in info["aggregate"]:
                return info
            return None

        argv = self.eval_argv(task, ckpt, out)
        if current() is None:
            self.launch(argv, rdir / f"eval-{which}.log", "eval", rdir)
        info = current()
        if info is None:
            raise SuiteError(f"{shown(out)}: evaluation wrote no eval_info.json for {shown(ckpt)}; see "
                             f"{shown(rdir / f'eval-{which}.log')}")
        return {"checkpoint": ckpt.relative_to(self.out).as_posix(), "command": display(argv),
                "eval_info": (out / "eval_info.json").relative_to(self.out).as_posix(),
                **records.eval_summary(info)}

    def finish(self, task: SuiteTask, variant: Variant, seed: int, rdir: Path, config_hash: str,
               store: dict[str, Any], step: int, evals: dict[str, Any], train_config: dict[str, Any] | None,
               rescored: dict[str, Any] | None = None) -> dict[str, Any]:
        """The run's result.json. A rescored run (`rescored`: its earlier record) keeps its training record
        and cost, latency included (the weights did not change, and the runner's own timing would be taken
        under load); its evaluation and eval_wall_s are the new ones."""
        import torch

        from benchmarks.suite.cost import codebook_metrics, policy_cost

        train_dir = rdir / "train"
        cmds = records.read_jsonl(rdir / "commands.jsonl")
        trains = [c for c in cmds if c["phase"] == "train"]
        # a training started without resume= began from step 0: segments before it left no checkpoint (stopped
        # before the first save), so neither their commands nor their time are part of this run
        fresh = [i for i, c in enumerate(trains) if "resume=" not in c["command"]]
        trains = trains[fresh[-1]:] if fresh else trains
        device = "cuda" if self.budget_name == "gpu" and torch.cuda.is_available() else "cpu"
        first = trains[0] if trains else self.git
        since = (rescored or {}).get("created") or ""  # a rescore's evaluations began after the earlier record
        result = {
            "schema": SCHEMA, "complete": True, "suite": self.suite.name, "budget": self.budget_name,
            "task": task.name, "variant": variant.name, "seed": seed, "config_hash": config_hash,
            "git_commit": first.get("git_commit"), "git_dirty": first.get("git_dirty"),
            "started": min((c["time"] for c in cmds), default=None),  # its first command (tables.producers)
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "store": {k: store[k] for k in ("path", "n_episodes", "sha256", "generated")},
            "machine": records.machine(),  # where this run trained and was evaluated
            "train": {"run_dir": train_dir.relative_to(self.out).as_posix(), "steps": step,
                      "commands": [c["command"] for c in trains], "segments": len(trains),
                      "wall_s": round(sum(c["wall_s"] for c in trains), 1)},
            "eval_wall_s": round(sum(c["wall_s"] for c in cmds if c["phase"] == "eval" and c["time"] >= since), 1),
            "cost": rescored["cost"] if rescored else policy_cost(train_dir / "checkpoints" / "last.ckpt", device),
            "codebook": codebook_metrics(train_dir),
            "eval": evals,
            # resolved and flat (benchmarks/suite/resolved.py): what trained it, for a later check of a restored run
            "train_config": train_config or resolved.train_config(self.train_argv(task, variant, seed, train_dir)),
        }
        if rescored:  # what the shared-stream scores were, and by which code the new ones were made
            before = {k: {"n_success": v["n_success"], "n_episodes": v["n_episodes"]}
                      for k, v in rescored["eval"].items() if v}
            result.update(train=rescored["train"], started=rescored.get("started", result["started"]),
                          rescored={**self.git, "time": result["created"], "before": before})
        records.write_json(rdir / "result.json", result)
        s = evals["last"]
        self.echo(f"  {records.run_key(task.name, variant.name, seed)}: last {s['success_rate']:.2f} "
                  f"({s['n_success']}/{s['n_episodes']})")
        return result

    # --- the suite --------------------------------------------------------------------------------
    def definition(self) -> dict[str, Any]:
        return {"suite": self.suite.name, "description": self.suite.description, "budget": self.budget_name,
                "budget_spec": asdict(self.budget), "multitask": self.suite.multitask,
                "tasks": [{"name": t.name, "store": t.store, "n_demos": t.demos(self.budget),
                           "train_overrides": list(t.train_task + t.train_overrides),
                           "target": asdict(t.target) if t.target else None} for t in self.suite.tasks],
                "variants": self.recorded_variants(),
                "eval_seed_offset": EVAL_SEED_OFFSET}

    def recorded_variants(self) -> dict[str, list[str]]:
        """The variants of this invocation and of earlier ones into the same `out` (a suite run policy by
        policy, e.g. side by side in two processes), in the suite's order: the report lists them all."""
        earlier = {*(records.read_json(self.out / "suite.json") or {}).get("variants", {}),
                   *(p.name for p in self.out.glob("runs/*/*") if p.is_dir())}
        chosen = {v.name for v in self.variants}
        return {name: list(v.overrides(self.budget_name)) for name, v in self.suite.known_variants().items()
                if name in chosen or name in earlier}

    def run(self) -> dict[str, Any] | None:
        """Everything the suite asks for that is not finished yet; returns the results document."""
        from benchmarks.suite.results import collect
        from benchmarks.suite.tables import write_report

        if not self.dry_run:
            records.append_jsonl(self.out / "invocations.jsonl", {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": self.command, **self.git,
                "policies": [v.name for v in self.variants], "seeds": list(self.seeds)})
            records.write_json(self.out / "suite.json", self.definition())
        stores: dict[str, dict[str, Any]] = {}
        # Seed-major: a long suite has every (task, policy) at one seed before it starts the next seed.
        for seed in self.seeds:
            for task in self.tasks:
                name = self.store_path(task).name
                if name not in stores:
                    stores[name] = self.ensure_store(task)
                for variant in self.variants:
                    self.run_one(task, variant, seed, stores[name])
                    if not self.dry_run:
                        write_report(self.out, collect(self.out))
        return None if self.dry_run else collect(self.out)
