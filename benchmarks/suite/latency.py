"""b=1 latency of every policy of a suite, measured again in one process, interleaved.

The runner measures a run's latency right after its training (benchmarks/suite/cost.py); on a shared
machine that number carries whatever else was running then (two suite lanes side by side slow each
other's chunks by up to 2x, unevenly). This pass loads the last checkpoint of every finished run in
`out`, then measures them in rounds, each round timing every policy once (median of `repeats` chunks),
so all policies see the same machine state; a policy's latency is the median over rounds.

A run restored from a published results.json has no checkpoint here. It is timed on a stand-in: its own
first train command run for one step on this suite's store (`<out>/latency-stand-ins/<run>/`), which
builds the same network with untrained weights. A chunk's cost does not depend on the weights' values
(the same layers, the same k experts per denoising step), so the stand-in's latency is the run's; the
stand-in is used only if its parameter and FLOP counts equal the run's recorded ones. Without the store
(run the suite command first: it regenerates it) a restored run keeps its earlier number, and the table
then says that its latencies come from more than one pass.

It rewrites `cost.latency_*` in each run's result.json (the previous value kept as
`latency_b1_ms_at_training`; `latency_weights` says whether the run's own or a stand-in's were timed) and
the suite's results.json, table and plots. Run it with nothing else on the CPU; the 1-minute load
average before and after is recorded.

    python -m benchmarks.suite latency OUT [rounds=5] [repeats=20] [threads=1]
"""

from __future__ import annotations

import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import device_name, median_seconds
from benchmarks.suite import records
from benchmarks.suite.cost import count_flops, dummy_inputs, param_counts
from benchmarks.suite.processes import display, run_subprocess, shown
from benchmarks.suite.results import collect, finished_runs
from benchmarks.suite.tables import write_report

# one step and one small validation (so its checkpoint is written as a run's is): all the stand-in trains
STAND_IN = ("trainer.max_steps=1", "trainer.val_check_interval=1", "trainer.limit_val_batches=1",
            "trainer.val_sample_batches=1")
STAND_IN_REPLACED = ("resume", "run_dir", "task.dataset", *(a.partition("=")[0] for a in STAND_IN))


def stand_in_argv(result: dict[str, Any], out: Path, run_dir: Path) -> list[str]:
    """The run's first train command, for one step on the store in `out`, into `run_dir`."""
    words = shlex.split(result["train"]["commands"][0])
    if words[:2] != ["python", "train.py"]:
        raise ValueError(f"not a train.py command: {result['train']['commands'][0]!r}")
    kept = [w for w in words[2:] if w.partition("=")[0] not in STAND_IN_REPLACED]
    return [sys.executable, "train.py", *kept, f"task.dataset={shown(out / result['store']['path'])}", *STAND_IN,
            f"run_dir={shown(run_dir)}"]


def stand_in(out: Path, result: dict[str, Any], echo=print) -> torch.nn.Module | None:
    """The run's stand-in policy (its checkpoint made once), or None with the reason echoed: no store here,
    the command failed, or its network differs from the run's (other parameter or FLOP counts)."""
    from policies.base import Policy

    key = records.run_key(result["task"], result["variant"], result["seed"])
    earlier = f"its earlier latency ({result['cost'].get('latency_measured', 'at training')}) is kept"
    if not (out / result["store"]["path"]).is_dir():
        echo(f"{key}: no checkpoint and no store {result['store']['path']} here to build a stand-in; {earlier}")
        return None
    if not result["train"]["commands"]:  # its commands.jsonl was lost before its result was written
        echo(f"{key}: no checkpoint and no recorded train command to build a stand-in from; {earlier}")
        return None
    run_dir = out / "latency-stand-ins" / key.replace("/", "-")
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        argv = stand_in_argv(result, out, run_dir)
        echo(f"{key}: no checkpoint here; stand-in: $ {display(argv)}")
        if run_subprocess(argv, run_dir.with_suffix(".log")) != 0 or not last.is_file():
            echo(f"{key}: the stand-in failed (see {shown(run_dir.with_suffix('.log'))}); {earlier}")
            return None
    policy = Policy.from_checkpoint(last).eval()
    total = param_counts(policy)["params_total"]
    obs, goal = dummy_inputs(policy.shape_meta, int(policy.config["n_obs_steps"]))
    flops = count_flops(policy, obs, goal)
    recorded = (result["cost"]["params_total"], result["cost"]["flops_per_chunk"])
    if (total, flops) != recorded:
        echo(f"{key}: its stand-in has {total} parameters and {flops} FLOPs per chunk, the run {recorded[0]} "
             f"and {recorded[1]}: not the same network; {earlier}")
        return None
    return policy


def remeasure(out: Path, rounds: int = 5, repeats: int = 20, threads: int = 1,
              echo=print) -> dict[str, float]:
    """Latency (ms) per run key `task/variant/seedS`, written into the run's result.json."""
    from policies.base import Policy

    if rounds < 1 or repeats < 1 or threads < 1:
        raise ValueError(f"rounds, repeats and threads must be >= 1, got {rounds}, {repeats}, {threads}")
    runs = []
    for path, result in finished_runs(out):
        last = out / result["train"]["run_dir"] / "checkpoints" / "last.ckpt"
        if last.is_file():
            policy, weights = Policy.from_checkpoint(last).eval(), "its own (checkpoints/last.ckpt)"
        else:  # a restored run (benchmarks/suite/restore.py): its weights are not here
            policy, weights = stand_in(out, result, echo), "an untrained stand-in (its train command, 1 step)"
        if policy is not None:
            runs.append((path, result, policy, weights))
    if not runs:
        raise ValueError(f"{out} holds no finished run with its checkpoint (runs/<task>/<variant>/seed<S>/)")
    torch.set_num_threads(threads)
    calls = {}
    for path, _, policy, _ in runs:
        obs, goal = dummy_inputs(policy.shape_meta, int(policy.config["n_obs_steps"]))
        calls[path] = (lambda p=policy, o=obs, g=goal: p.predict_action(o, g))
    load_before, t0 = os.getloadavg()[0], time.time()
    samples: dict[Path, list[float]] = {p: [] for p in calls}
    with torch.inference_mode():
        for fn in calls.values():  # first calls (allocations, caches) outside the rounds
            median_seconds(fn, repeats=1, warmup=2)
        for r in range(rounds):
            for path, fn in calls.items():
                samples[path].append(median_seconds(fn, repeats=repeats, warmup=1))
            echo(f"round {r + 1}/{rounds} done")
    load_after = os.getloadavg()[0]
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0))  # one stamp per pass: the table groups by it
    measured = {}
    for path, result, _, weights in runs:
        ms = statistics.median(samples[path]) * 1e3
        cost = result["cost"]
        cost.setdefault("latency_b1_ms_at_training", cost["latency_b1_ms"])
        cost.update(latency_b1_ms=ms, latency_device=device_name("cpu"), latency_threads=threads,
                    latency_repeats=repeats, latency_method=f"interleaved, {rounds} rounds, median of rounds",
                    latency_rounds_ms=[round(s * 1e3, 3) for s in samples[path]],
                    latency_load_avg_1m=[round(load_before, 2), round(load_after, 2)],
                    latency_measured=started, latency_weights=weights)
        records.write_json(path, result)
        key = records.run_key(result["task"], result["variant"], result["seed"])
        measured[key] = ms
        echo(f"{key}: {ms:.2f} ms (rounds {', '.join(f'{s * 1e3:.2f}' for s in samples[path])})")
    return measured


def main(argv: list[str]) -> int:
    from data.cli_args import key_values

    usage = "usage: python -m benchmarks.suite latency OUT [rounds=5] [repeats=20] [threads=1]"
    if not argv or "=" in argv[0]:
        raise ValueError(usage)
    out = Path(argv[0])
    texts = key_values(argv[1:], ("rounds", "repeats", "threads"), usage)
    try:
        opts = {k: int(v) for k, v in texts.items()}
    except ValueError:
        raise ValueError(f"rounds, repeats and threads are integers; {usage}") from None
    remeasure(out, **opts)
    write_report(out, collect(out))
    print(f"rewrote {out}/results.json, table.md and plots")
    return 0
