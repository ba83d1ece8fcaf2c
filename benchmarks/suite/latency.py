"""b=1 latency of every policy of a suite, measured again in one process, interleaved.

The runner measures a run's latency right after its training (benchmarks/suite/cost.py); on a shared
machine that number carries whatever else was running then (two suite lanes side by side slow each
other's chunks by up to 2x, unevenly). This pass loads the last checkpoint of every finished run in
`out`, then measures them in rounds, each round timing every policy once (median of `repeats` chunks),
so all policies see the same machine state; a policy's latency is the median over rounds. A run restored
from a published results.json (no checkpoint here) keeps its earlier number; the table then says that
its latencies come from more than one pass. It rewrites
`cost.latency_*` in each run's result.json (the previous value kept as `latency_b1_ms_at_training`) and
the suite's results.json, table and plots. Run it with nothing else on the CPU; the 1-minute load
average before and after is recorded.

    python -m benchmarks.suite latency OUT [rounds=5] [repeats=20] [threads=1]
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import device_name, median_seconds
from benchmarks.suite import records
from benchmarks.suite.cost import dummy_inputs
from benchmarks.suite.results import collect, finished_runs
from benchmarks.suite.tables import write_report


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
            runs.append((path, result, last))
        else:  # a restored run (benchmarks/suite/restore.py): its weights are not here to time
            key = records.run_key(result["task"], result["variant"], result["seed"])
            echo(f"{key}: no checkpoint here, its earlier "
                 f"latency ({result['cost'].get('latency_measured', 'at training')}) is kept")
    if not runs:
        raise ValueError(f"{out} holds no finished run with its checkpoint (runs/<task>/<variant>/seed<S>/)")
    torch.set_num_threads(threads)
    calls = {}
    for path, _, last in runs:
        policy = Policy.from_checkpoint(last).eval()
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
    for path, result, _ in runs:
        ms = statistics.median(samples[path]) * 1e3
        cost = result["cost"]
        cost.setdefault("latency_b1_ms_at_training", cost["latency_b1_ms"])
        cost.update(latency_b1_ms=ms, latency_device=device_name("cpu"), latency_threads=threads,
                    latency_repeats=repeats, latency_method=f"interleaved, {rounds} rounds, median of rounds",
                    latency_rounds_ms=[round(s * 1e3, 3) for s in samples[path]],
                    latency_load_avg_1m=[round(load_before, 2), round(load_after, 2)],
                    latency_measured=started)
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
