"""Rollout runner throughput on robosuite Lift: env steps/s and episodes/s, 1 vs 2 workers, state and image.

The policy is a stand-in that returns random action chunks of the right shape in microseconds, so
the numbers measure the runner and the simulator, not a network. Random actions never succeed,
so every episode runs `--max-steps` steps (default 120: about twice the ~60 steps the scripted
expert needs, i.e. the length of an episode a trained policy finishes). Each line records the
1-minute load average: on a shared machine, other processes' load changes every number here.

Cases: bare-lift-{state,image}-p{1,2} and p2_vs_p1-bare-...: bare env loops in 1 vs 2 processes,
the machine's own scaling ceiling (read the runner's ratio against it on a shared machine);
lift-{state,image}-w{1,2} (warm workers: env construction excluded; median of --repeats
runs, 1- and 2-worker runs interleaved so both see the same machine load), the ratio
w2_vs_w1-lift-{state,image} (median of the paired ratios), lift-*-w*-{main,worker}-cpu-per-step
(CPU ms per env step of the runner's process and of the workers, against bare-*-cpu-per-step: the
runner's overhead, which unlike the rates hardly depends on the load), and lift-state-w2-cold50: wall time of
one 50-episode evaluation from a cold start (spawning workers and building envs included), the
issue's target.

    .venv/bin/python benchmarks/rollout_throughput.py [--quick] [--save]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402
from common import Recorder  # noqa: E402

from envs.processes import WORKER_THREAD_VARS  # noqa: E402
from rollouts.options import RolloutOptions  # noqa: E402
from rollouts.runner import Runner  # noqa: E402

ACTION_DIM = 7  # Lift with the OSC_POSE controller
N_OBS_STEPS, N_ACTION_STEPS, HORIZON = 2, 8, 16


class RandomChunkPolicy:
    """Uniform random chunks [B, HORIZON, 7] in [-1, 1]; no parameters, negligible cost."""

    def __init__(self, seed: int = 0) -> None:
        self.config = {"n_obs_steps": N_OBS_STEPS, "n_action_steps": N_ACTION_STEPS}
        self._gen = torch.Generator().manual_seed(seed)

    def predict_action(self, obs, goal):
        b = goal["task"].shape[0]
        return torch.rand(b, HORIZON, ACTION_DIM, generator=self._gen) * 2 - 1


def lift_task(image: bool) -> dict:
    spec = {"simulator": "robosuite", "task": "Lift", "horizon": 400}
    if image:
        spec.update(cameras=["agentview"], image_size=84)
    return {"name": "Lift", "instruction": "", "env_spec": spec}


def compare(rec: Recorder, obs_kind: str, n_episodes: int, max_steps: int, repeats: int) -> None:
    """1 vs 2 warm workers, runs interleaved (w1, w2, w1, w2, ...) so that both see the same load.

    Emits the median env steps/s and episodes/s of each, and the median of the paired ratios.
    """
    policy = RandomChunkPolicy()
    task = [lift_task(obs_kind == "image")]
    def options(workers: int, n: int, steps: int) -> RolloutOptions:
        return RolloutOptions(n_episodes=n, workers=workers, max_steps=steps, progress=False)

    with Runner(task, options(1, n_episodes, max_steps)) as r1, Runner(task, options(2, n_episodes, max_steps)) as r2:
        for r in (r1, r2):  # spawn the workers and build their envs outside the timing
            r.run(policy, options(r.n_workers, r.n_workers, N_ACTION_STEPS))
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(repeats):
            for workers, r in ((1, r1), (2, r2)):
                cpu0 = time.process_time()
                m = r.run(policy)
                m["main_cpu_s"] = time.process_time() - cpu0
                runs[workers].append(m)
    for workers, ms in runs.items():
        errors = [e["error"] for m in ms for e in m["episodes"] if e["error"]]
        if errors:
            raise RuntimeError(f"{len(errors)} episodes errored: {errors[:3]}")
        ctx = dict(workers=workers, obs=obs_kind, n_episodes=n_episodes, max_steps=max_steps,
                   repeats=repeats, n_action_steps=N_ACTION_STEPS, load_avg_1m=os.getloadavg()[0])
        case = f"lift-{obs_kind}-w{workers}"
        steps = statistics.median(m["env_steps_per_s"] for m in ms)
        rec.emit(case, "env_steps_per_s", steps, "steps/s", **ctx)
        episodes = statistics.median(m["episodes_per_s"] for m in ms)
        rec.emit(case, "episodes_per_s", episodes, "episodes/s", **ctx)
        # The runner's own cost: CPU time per env step of this (the policy's) process, and of the
        # workers (to compare with bare-...-cpu-per-step: the difference is the worker's overhead).
        main_ms = statistics.median(1000 * m["main_cpu_s"] / m["env_steps"] for m in ms)
        rec.emit(f"{case}-main-cpu-per-step", "ms", main_ms, "ms", **ctx)
        worker_ms = statistics.median(1000 * m["worker_cpu_s"] / m["env_steps"] for m in ms)
        rec.emit(f"{case}-worker-cpu-per-step", "ms", worker_ms, "ms", **ctx)
    ratios = [b["env_steps_per_s"] / a["env_steps_per_s"] for a, b in zip(runs[1], runs[2])]
    rec.ratio(f"w2_vs_w1-lift-{obs_kind}", "speedup", statistics.median(ratios), max_steps=max_steps,
              n_episodes=n_episodes, repeats=repeats, paired_ratios=[round(x, 3) for x in ratios])


def _bare_loop(spec: dict, n_steps: int, max_steps: int, queue, go) -> None:
    from envs.factory import make_env

    env = make_env(spec)
    env.reset(seed=1)
    gen = torch.Generator().manual_seed(0)
    actions = (torch.rand(n_steps, ACTION_DIM, generator=gen) * 2 - 1).numpy()
    queue.put("ready")
    go.wait()  # all processes start stepping together
    t0, cpu0 = time.perf_counter(), time.process_time()
    for i, a in enumerate(actions):
        if i and i % max_steps == 0:
            env.reset(seed=i)
        env.step(a)
    queue.put((time.perf_counter() - t0, time.process_time() - cpu0))


def machine_scaling(rec: Recorder, obs_kind: str, n_steps: int, max_steps: int, repeats: int) -> None:
    """The ceiling for any runner: bare env loops (no runner, no policy) in 1 vs 2 processes at once.

    On an idle 2-core machine this is close to 2x; a lower number means other processes hold
    the cores, and the runner's w2_vs_w1 ratio should be read against it.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    spec = lift_task(obs_kind == "image")["env_spec"]
    for var in WORKER_THREAD_VARS:  # as in the runner's workers (idle BLAS threads spin and steal CPU)
        os.environ.setdefault(var, "1")
    rates: dict[int, list[float]] = {1: [], 2: []}
    cpu_ms: list[float] = []
    for _ in range(repeats):
        for procs in (1, 2):
            queues, go = [ctx.Queue() for _ in range(procs)], ctx.Event()
            ps = [ctx.Process(target=_bare_loop, args=(spec, n_steps, max_steps, q, go)) for q in queues]
            for p in ps:
                p.start()
            for q in queues:
                assert q.get(timeout=300) == "ready"
            go.set()
            results = [q.get(timeout=600) for q in queues]
            for p in ps:
                p.join()
            rates[procs].append(procs * n_steps / max(wall for wall, _ in results))
            cpu_ms += [1000 * cpu / n_steps for _, cpu in results]
    for procs, r in rates.items():
        rec.emit(f"bare-lift-{obs_kind}-p{procs}", "env_steps_per_s", statistics.median(r), "steps/s",
                 processes=procs, n_steps=n_steps, repeats=repeats, load_avg_1m=os.getloadavg()[0])
    # CPU time per step hardly depends on the machine's load: the baseline for the workers' own.
    rec.emit(f"bare-lift-{obs_kind}-cpu-per-step", "ms", statistics.median(cpu_ms), "ms", n_steps=n_steps)
    ratios = [b / a for a, b in zip(rates[1], rates[2])]
    rec.ratio(f"p2_vs_p1-bare-lift-{obs_kind}", "speedup", statistics.median(ratios), n_steps=n_steps,
              repeats=repeats, paired_ratios=[round(x, 3) for x in ratios])


def cold_eval(rec: Recorder, n_episodes: int, max_steps: int) -> None:
    """One evaluation as a user runs it: fresh workers, envs built inside the timing."""
    t0 = time.perf_counter()
    options = RolloutOptions(n_episodes=n_episodes, workers=2, max_steps=max_steps, progress=False)
    with Runner([lift_task(False)], options) as runner:
        m = runner.run(RandomChunkPolicy())
    wall = time.perf_counter() - t0
    ctx = dict(workers=2, obs="state", n_episodes=n_episodes, max_steps=max_steps, env_steps=m["env_steps"],
               load_avg_1m=os.getloadavg()[0])
    rec.emit(f"lift-state-w2-cold{n_episodes}", "ms", wall * 1000, "ms", **ctx)
    rec.emit(f"lift-state-w2-cold{n_episodes}", "episodes_per_s", n_episodes / wall, "episodes/s", **ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a reduced run")
    parser.add_argument("--smoke", action="store_true",
                        help="state only, the runner comparison of 2 episodes of 8 steps: checks the script runs")
    parser.add_argument("--save", action="store_true",
                        help="write benchmarks/results/rollout_throughput-cpu.jsonl")
    parser.add_argument("--max-steps", type=int, help="steps per episode (default 120; quick 40)")
    parser.add_argument("--episodes", type=int, help="episodes per timed run (default 10; quick 4)")
    parser.add_argument("--repeats", type=int, help="timed runs per case (default 3; quick 1)")
    parser.add_argument("--obs", choices=["state", "image", "both"], default="both")
    args = parser.parse_args()
    if args.smoke:
        args.quick, args.save, args.obs = True, False, "state"
        args.max_steps, args.episodes, args.repeats = args.max_steps or 8, args.episodes or 2, 1
    torch.set_num_threads(1)  # the main process only stacks observations; leave the cores to the workers
    max_steps = args.max_steps or (40 if args.quick else 120)
    n_episodes = args.episodes or (4 if args.quick else 10)
    repeats = args.repeats or (1 if args.quick else 3)
    rec = Recorder("rollout_throughput", "cpu", save=args.save)
    kinds = ["state", "image"] if args.obs == "both" else [args.obs]
    for kind in kinds:
        if not args.smoke:
            machine_scaling(rec, kind, n_episodes * max_steps // 2, max_steps, repeats)
        compare(rec, kind, n_episodes, max_steps, repeats)
    if not args.quick and "state" in kinds:
        cold_eval(rec, 50, max_steps)
    path = rec.write()
    if path:
        print(f"saved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
