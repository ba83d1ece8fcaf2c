"""Environment throughput: env steps/s per task, state vs image observations, fast vs full
render, one vs two worker processes. Prints one JSON object per line (DESIGN.md).

    python benchmarks/env_throughput.py                 # the five robosuite tasks, every variant
    python benchmarks/env_throughput.py --quick         # lift only, seconds
    python benchmarks/env_throughput.py --tasks lift,reach-v3 --save

Each measurement runs random actions (resetting every `--episode` steps, so resets count) for
`--seconds` per repeat in already-warm worker processes and reports the median of `--repeats`.
With two workers the rate is the sum over both, measured while both run at the same time.
Ratio lines: `<task>-image-fast_vs_<task>-image-full-w1` (speedup of the fast render) and
`<case>-w2_vs_<case>-w1` (throughput_ratio of the second process).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results" / "env_throughput-cpu.jsonl"
VARIANTS = {"state": (False, "fast"), "image-fast": (True, "fast"), "image-full": (True, "full")}


def _worker(conn, spec_dict: dict, seed: int, episode: int) -> None:
    """Build the env, then answer ("run", seconds) with (steps, elapsed) until told to stop."""
    import numpy as np

    from envs.factory import make_env

    env = make_env(spec_dict)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    env.reset(seed=seed)
    t = 0

    def step() -> None:
        nonlocal t
        env.step(rng.uniform(low, high).astype(np.float32) * 0.3)
        t += 1
        if t % episode == 0:
            env.reset()

    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            break
        if msg[0] == "warmup":
            for _ in range(msg[1]):
                step()
            conn.send("done")
            continue
        seconds = msg[1]
        conn.recv()  # the go signal, sent to every worker at once
        start, steps = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            step()
            steps += 1
        conn.send((steps, time.perf_counter() - start))
    env.close()


class Workers:
    def __init__(self, n: int, spec_dict: dict, episode: int) -> None:
        ctx = mp.get_context("spawn")  # forked children inherit GL state and crash
        self.conns, self.procs = [], []
        for i in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, spec_dict, i, episode), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for c in self.conns:
            if c.recv() != "ready":
                raise RuntimeError("benchmark worker failed to start")

    def warmup(self, steps: int) -> None:
        for c in self.conns:
            c.send(("warmup", steps))
        for c in self.conns:
            c.recv()

    def rate(self, n: int, seconds: float) -> float:
        """Steps/s of the first n workers running together."""
        active = self.conns[:n]
        for c in active:
            c.send(("run", seconds))
        for c in active:
            c.send("go")
        return sum(steps / elapsed for steps, elapsed in (c.recv() for c in active))

    def close(self) -> None:
        for c in self.conns:
            c.send(("stop",))
        for p in self.procs:
            p.join(timeout=30)


def _line(case: str, metric: str, value: float, unit: str, **context) -> dict:
    return {"bench": "env_throughput", "case": case, "metric": metric, "value": round(value, 3), "unit": unit,
            "device": "cpu", "torch": version("torch"), **context}


def measure(task: str, variant: str, workers: list[int], args) -> list[dict]:
    from envs.registry import resolve_tasks
    from envs.render import choose_backend

    images, quality = VARIANTS[variant]
    (entry,) = resolve_tasks(task, images=images, render=quality, image_size=args.image_size)
    spec = entry["env_spec"]
    pool = Workers(max(workers), spec.to_dict(), args.episode)
    lines, rates = [], {}
    try:
        pool.warmup(args.warmup)
        for n in workers:
            runs = [pool.rate(n, args.seconds) for _ in range(args.repeats)]
            rates[n] = statistics.median(runs)
            context = {"task": task, "simulator": spec.simulator, "obs": "image" if images else "state",
                       "render": quality, "workers": n, "cameras": spec.cameras,
                       "image_size": spec.image_size,
                       "repeats": args.repeats, "seconds": args.seconds, "gl": choose_backend(),
                       "cpus": os.cpu_count(), "machine": platform.machine(),
                       # other processes on the machine skew the numbers, two-process ones most
                       "loadavg_1m": round(os.getloadavg()[0], 2)}
            lines.append(_line(f"{task}-{variant}-w{n}", "env_steps_per_s", rates[n], "steps/s", **context))
    finally:
        pool.close()
    if 1 in rates and 2 in rates:
        lines.append(_line(f"{task}-{variant}-w2_vs_{task}-{variant}-w1", "throughput_ratio",
                           rates[2] / rates[1], "x", task=task))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="lift,stack,can,door,square", help="comma list of registry names")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--workers", default="1,2", help="process counts to measure")
    parser.add_argument("--seconds", type=float, default=3.0, help="per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20, help="steps per worker before timing")
    parser.add_argument("--episode", type=int, default=100, help="steps between resets")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--quick", action="store_true", help="lift, state and fast images, one process")
    parser.add_argument("--smoke", action="store_true", help="lift, state, one process, 0.2 s: checks the script runs")
    parser.add_argument("--save", action="store_true", help=f"append the lines to {RESULTS}")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.variants, args.workers = "lift", "state,image-fast", "1"
        args.seconds, args.repeats, args.warmup = 1.0, 1, 5
    if args.smoke:
        args.tasks, args.variants, args.workers, args.save = "lift", "state", "1", False
        args.seconds, args.repeats, args.warmup = 0.2, 1, 2
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    workers = sorted({int(w) for w in args.workers.split(",")})
    lines = []
    for task in args.tasks.split(","):
        task_lines = {}
        for variant in variants:
            for line in measure(task.strip(), variant, workers, args):
                print(json.dumps(line), flush=True)
                lines.append(line)
                task_lines[line["case"]] = line["value"]
        fast, full = task_lines.get(f"{task}-image-fast-w1"), task_lines.get(f"{task}-image-full-w1")
        if fast and full:
            line = _line(f"{task}-image-fast_vs_{task}-image-full-w1", "speedup", fast / full, "x", task=task)
            print(json.dumps(line), flush=True)
            lines.append(line)
    if args.save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)


if __name__ == "__main__":
    main()
