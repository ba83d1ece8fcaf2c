"""Headless GL back ends on the CPU: Mesa's EGL vs OSMesa, per-step camera render time of robosuite Lift.

    python benchmarks/render_backends.py            # 84x84 agentview, 200 steps x 5 repeats per case
    python benchmarks/render_backends.py --quick    # seconds
    python benchmarks/render_backends.py --save     # write benchmarks/results/render_backends-cpu.jsonl

A process renders through one back end (mujoco reads MUJOCO_GL at import), so each back end gets a
spawned worker of its own; both are built first and then measured in turns (egl, osmesa, egl, ...), so
a load on the machine hits both alike. In each turn a worker steps its env `--steps` times with random
actions twice: with the camera observation, and with cameras paused (physics and controller only). The
difference is the render time per step. Prints one JSON object per line (DESIGN.md): per back end
`ms` of a step with and without the camera and the render's share, then `egl_vs_osmesa` (speedup of
the render; > 1: EGL faster).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BACKENDS = ("egl", "osmesa")


def _worker(conn, size: int) -> None:
    """Build Lift with one camera, then answer ("run", steps, paused) with the seconds those steps took."""
    import numpy as np

    from envs.factory import make_env
    from envs.registry import robosuite_spec

    env = make_env(robosuite_spec("Lift", images=True, image_size=size, horizon=100_000))
    rng = np.random.default_rng(0)
    low, high = env.action_space.low, env.action_space.high
    env.reset(seed=0)
    conn.send(os.environ["MUJOCO_GL"])
    while (msg := conn.recv())[0] == "run":
        _, steps, paused = msg
        actions = rng.uniform(low, high, size=(steps, len(low))).astype(np.float32) * 0.3
        t0 = time.perf_counter()
        if paused:
            with env.cameras_paused():
                for a in actions:
                    env.step_physics(a)
        else:
            for a in actions:
                env.step_physics(a)
        conn.send(time.perf_counter() - t0)
    env.close()


def _start(backend: str, size: int):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    saved = {k: os.environ.get(k) for k in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "OMP_NUM_THREADS")}
    os.environ.update(MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend, OMP_NUM_THREADS="1")
    try:
        proc = ctx.Process(target=_worker, args=(child, size), daemon=True)
        proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert parent.recv() == backend
    return proc, parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=84)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/render_backends-cpu.jsonl")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.repeats = 30, 2
    workers = {b: _start(b, args.size) for b in BACKENDS}
    times: dict[tuple[str, bool], list[float]] = {(b, p): [] for b in BACKENDS for p in (False, True)}
    for conn in (c for _, c in workers.values()):  # warm-up: first frames, caches
        conn.send(("run", 10, False))
        conn.recv()
    for _ in range(args.repeats):
        for b in BACKENDS:
            for paused in (False, True):
                workers[b][1].send(("run", args.steps, paused))
                times[(b, paused)].append(workers[b][1].recv() / args.steps * 1000)
    for proc, conn in workers.values():
        conn.send(("stop",))
        proc.join(30)
    from importlib.metadata import version

    from benchmarks.common import Recorder

    rec = Recorder("render_backends", save=args.save)
    context = {"cpu": _cpu_model(), "task": "Lift", "image_size": args.size, "steps": args.steps,
               "repeats": args.repeats, "mujoco": version("mujoco"), "robosuite": version("robosuite")}
    render_ms = {}
    for b in BACKENDS:
        render_ms[b] = statistics.median(a - p for a, p in zip(times[(b, False)], times[(b, True)]))
        rec.emit(f"lift-{args.size}-{b}-step-camera", "ms", statistics.median(times[(b, False)]), "ms", **context)
        rec.emit(f"lift-{args.size}-{b}-step-no-camera", "ms", statistics.median(times[(b, True)]), "ms", **context)
        rec.emit(f"lift-{args.size}-{b}-render", "ms", render_ms[b], "ms", **context)
    rec.ratio(f"lift-{args.size}-egl_vs_osmesa-render", "speedup", render_ms["osmesa"] / render_ms["egl"], **context)
    path = rec.write()
    if path:
        print(f"# wrote {path}")


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.machine())


if __name__ == "__main__":
    main()
