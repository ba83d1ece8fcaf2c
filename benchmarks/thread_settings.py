"""Training steps/s of the default MoDE run under competing CPU load, per thread setting.

  python -m benchmarks.thread_settings [--quick] [--save] [--steps 8] [--rounds 3] [--batch 256]

PyTorch's default is one intra-op thread per core with OpenMP threads that spin while they wait; when
another process takes a core, the spinning threads of the team wait on each other and a step can get
many times slower. Settings (each a separate process, since OpenMP reads its environment once):
  t2          2 threads (the default on this 2-core machine), OpenMP's default wait policy
  t2-passive  2 threads, OMP_WAIT_POLICY=PASSIVE (waiting threads sleep instead of spinning)
  t1          1 thread
  free        threads = free cores at start-up (cores minus other runnable processes, see free_cores),
              OMP_WAIT_POLICY=PASSIVE
Loads: none (only what else runs on the machine), burn1 (one process spinning on one core), torch2 (a
second PyTorch job: 2-thread GEMMs, default wait policy). The settings' processes are started together
under each load and take turns (`--rounds` rounds of `--steps` steps each, one process stepping at a
time), so every setting meets the same load; the median steps/s per setting is reported
(metric steps_per_s), with ratio lines <setting>_vs_t2 (throughput_ratio).

The evaluation case (`--eval-checkpoint CKPT`): the whole `eval_rollouts.py` command (`--episodes`
episodes, 2 env workers, no video) under each load, per evaluation setting (EVAL_SETTINGS: `auto` is what
the framework does by itself, envs/threads.py; the others fix the variables by hand), the settings taking
turns for `--eval-rounds` rounds. Cases eval-<setting>-<load> (episodes_per_s, median wall time), ratios
eval-auto-<load>_vs_eval-auto-none and eval-auto_vs_eval-<best fixed>-<load> (throughput_ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks.common import LIFT_ACTION_DIM, LIFT_STATE, Recorder, lift_state_setup
from envs.threads import free_cores

SETTINGS = {"t2": {"threads": "2"}, "t2-passive": {"threads": "2", "OMP_WAIT_POLICY": "PASSIVE"},
            "t1": {"threads": "1"}, "free": {"threads": "free", "OMP_WAIT_POLICY": "PASSIVE"}}
LOADS = {"none": [], "burn1": ["burn"], "torch2": ["torch2"]}
# OMP_WAIT_POLICY="" leaves OpenMP's own default (spinning a while), which envs/threads.py would otherwise replace.
EVAL_SETTINGS = {"auto": {}, "t1": {"OMP_NUM_THREADS": "1"},
                 "t2-passive": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
                 "t2-spin": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": ""}}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- the processes -----------------------------------------------------------------------------
def worker(batch_size: int) -> None:
    """Build the default MoDE training step, then answer each 'N' line on stdin with N steps' steps/s."""
    import torch

    from policies.base import Policy
    from training.module import adamw

    threads = os.environ["BENCH_THREADS"]
    torch.set_num_threads(free_cores() if threads == "free" else int(threads))
    normalizer, shape_meta = lift_state_setup(1000)
    policy = Policy.build("mode", {}, shape_meta, normalizer).train()
    cfg = policy.cfg
    opt = adamw(policy.parameters(), lr=1e-4)  # the trainer's optimizer
    batch = {"obs": {k: torch.randn(batch_size, cfg.n_obs_steps, d) for k, d in LIFT_STATE.items()},
             "action": torch.rand(batch_size, cfg.horizon, LIFT_ACTION_DIM) * 2 - 1,
             "action_is_pad": torch.zeros(batch_size, cfg.horizon, dtype=torch.bool),
             "task": torch.zeros(batch_size, dtype=torch.long), "goal": {}}

    def step() -> None:
        loss, _ = policy.compute_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        n = int(line)
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        print(json.dumps({"steps_per_s": n / (time.perf_counter() - t0)}), flush=True)


def burn() -> None:
    while True:
        pass


def torch2() -> None:
    import torch

    torch.set_num_threads(2)
    a = torch.randn(512, 512)
    while True:
        a @ a


def _spawn(role: str, env: dict[str, str] | None = None, batch: int = 0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "benchmarks.thread_settings", "--role", role, "--batch", str(batch)]
    inherited = {k: v for k, v in os.environ.items()
                 if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}  # the setting decides
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**inherited, **(env or {})}, cwd=os.path.dirname(os.path.dirname(__file__)))


def _ask(proc: subprocess.Popen, steps: int) -> float:
    proc.stdin.write(f"{steps}\n")
    proc.stdin.flush()
    return _reply(proc)["steps_per_s"]


def _reply(proc: subprocess.Popen) -> dict:
    """The worker's next JSON line; a worker that died fails the benchmark at once (its traceback is above)."""
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a thread_settings worker exited with code {proc.wait()}; its error is printed above")
    return json.loads(line)


def measure_load(load: str, args, rec: Recorder) -> None:
    loads = [_spawn(role) for role in LOADS[load]]
    workers: dict[str, subprocess.Popen] = {}
    try:
        time.sleep(1.0)  # the load is running before the settings pick their threads
        for name in args.settings:
            setting = SETTINGS[name]
            env = {"BENCH_THREADS": setting["threads"], "OMP_NUM_THREADS": "1" if setting["threads"] == "1" else ""}
            if "OMP_WAIT_POLICY" in setting:
                env["OMP_WAIT_POLICY"] = setting["OMP_WAIT_POLICY"]
            workers[name] = _spawn("worker", {k: v for k, v in env.items() if v}, args.batch)
        threads = {name: _reply(p)["threads"] for name, p in workers.items()}
        rates: dict[str, list[float]] = {name: [] for name in workers}
        for _ in range(args.rounds):
            for name, proc in workers.items():
                rates[name].append(_ask(proc, args.steps))
        ctx = {"load": load, "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
               "loadavg_1m": os.getloadavg()[0], "quick": args.quick}
        med = {name: statistics.median(r) for name, r in rates.items()}
        for name, value in med.items():
            rec.emit(f"{name}-{load}", "steps_per_s", value, "steps/s", threads=threads[name],
                     wait_policy=SETTINGS[name].get("OMP_WAIT_POLICY", "default"), **ctx)
        for name in med:
            if name != "t2" and "t2" in med:
                rec.ratio(f"{name}_vs_t2-{load}", "throughput_ratio", med[name] / med["t2"], **ctx)
    finally:
        for proc in [*workers.values(), *loads]:
            proc.kill()
            proc.wait()


def _evaluation_seconds(args, setting: dict[str, str], out: str) -> float:
    """Wall time of one eval_rollouts.py command under `setting` (what a user types, from a cold start)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    cmd = [sys.executable, "eval_rollouts.py", f"checkpoint={args.eval_checkpoint}", f"n_episodes={args.episodes}",
           "workers=2", "video.n=0", "logger=none", "progress=false", f"out={out}", *args.eval_overrides]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**env, **setting}, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"evaluation failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def measure_eval(args, rec: Recorder) -> None:
    import tempfile

    names = [n for n in args.eval_settings.split(",")]
    if unknown := sorted(set(names) - set(EVAL_SETTINGS)):
        raise SystemExit(f"unknown evaluation settings {unknown}; choose from {', '.join(EVAL_SETTINGS)}")
    rate: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for load in args.loads.split(","):
            loads = [_spawn(role) for role in LOADS[load]]
            try:
                time.sleep(1.0 if loads else 0.0)
                seconds: dict[str, list[float]] = {n: [] for n in names}
                for r in range(args.eval_rounds):
                    for n in names:
                        seconds[n].append(_evaluation_seconds(args, EVAL_SETTINGS[n], f"{tmp}/{load}-{n}-{r}"))
            finally:
                for proc in loads:
                    proc.kill()
                    proc.wait()
            ctx = {"load": load, "episodes": args.episodes, "workers": 2, "rounds": args.eval_rounds,
                   "loadavg_1m": os.getloadavg()[0]}
            for n in names:
                med = statistics.median(seconds[n])
                rate[n, load] = args.episodes / med
                rec.emit(f"eval-{n}-{load}", "episodes_per_s", rate[n, load], "episodes/s", wall_s=round(med, 2),
                         setting=EVAL_SETTINGS[n], **ctx)
            fixed = [n for n in names if n != "auto"]
            if "auto" in names and fixed:
                best = max(fixed, key=lambda n: rate[n, load])
                rec.ratio(f"eval-auto_vs_eval-{best}-{load}", "throughput_ratio", rate["auto", load] / rate[best, load],
                          **ctx)
            if "auto" in names and load != "none" and ("auto", "none") in rate:
                rec.ratio(f"eval-auto-{load}_vs_eval-auto-none", "throughput_ratio",
                          rate["auto", load] / rate["auto", "none"], **ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one load (burn1), 1 round of 2 steps, batch 64")
    parser.add_argument("--smoke", action="store_true",
                        help="no load, settings t1 and free, 1 round of 1 step at batch 8: checks the script runs")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/thread_settings-cpu.jsonl")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"any of {', '.join(SETTINGS)}")
    parser.add_argument("--eval-checkpoint", default=None,
                        help="measure the evaluation case (eval_rollouts.py on this checkpoint) instead of training")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation case: episodes per evaluation")
    parser.add_argument("--eval-rounds", type=int, default=2, help="evaluation case: rounds of all settings")
    parser.add_argument("--eval-settings", default=",".join(EVAL_SETTINGS), help=f"any of {', '.join(EVAL_SETTINGS)}")
    parser.add_argument("--eval-overrides", nargs="*", default=[], help="extra eval.yaml overrides (max_steps=...)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--loads", default=None, help="default none,burn1,torch2 (evaluation case: none,burn1)")
    parser.add_argument("--role", default="main", choices=["main", "worker", "burn", "torch2"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role != "main":
        {"worker": lambda: worker(args.batch), "burn": burn, "torch2": torch2}[args.role]()
        return
    if args.quick:
        args.steps, args.rounds, args.batch, args.loads = 2, 1, 64, "burn1"
    if args.smoke and not args.eval_checkpoint:
        args.steps, args.rounds, args.batch, args.loads, args.settings = 1, 1, 8, "none", "t1,free"
    if args.smoke and args.eval_checkpoint:
        args.episodes, args.eval_rounds, args.eval_settings = 1, 1, "auto"
        args.eval_overrides = [*args.eval_overrides, "max_steps=4"]
    args.settings = args.settings.split(",")
    if unknown := sorted(set(args.settings) - set(SETTINGS)):
        raise SystemExit(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    if args.eval_checkpoint:
        args.loads = "none" if args.smoke else args.loads or "none,burn1"
        rec = Recorder("thread_settings_eval", save=args.save and not args.smoke)
        measure_eval(args, rec)
        path = rec.write()
        if path:
            print(f"# wrote {path}")
        return
    rec = Recorder("thread_settings", save=args.save and not args.smoke)
    for load in (args.loads or "none,burn1,torch2").split(","):
        if load not in LOADS:
            raise SystemExit(f"unknown load {load!r}; choose from {', '.join(LOADS)}")
        measure_load(load, args, rec)
    path = rec.write()
    if path:
        print(f"# wrote {path}")


if __name__ == "__main__":
    main()
