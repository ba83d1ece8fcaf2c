"""Count the battery's verdicts on the checkout in PYTHONPATH (clear / accepted / traceback / silent):

    PYTHONPATH=. python -m tests.reliability.count_verdicts [--json]

Every case of cases.py goes through its entry point in this process, as far as that entry point takes it
(a bad value the checkout does not refuse trains two steps, evaluates two episodes, or simulates), so the
same script measures a checkout before and after a change. Not a test: a measurement for the record.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


MEMORY_LIMIT_BYTES = 10 << 30  # a checkout that does not refuse a huge data.batch_size would take the machine
CASE_LIMIT_S = 180  # a case still running after this is going on without a word (a huge batch grinds for hours)


class CaseTimeout(Exception):
    pass


def _limited(call):
    """`call` under CASE_LIMIT_S: a CaseTimeout when it runs longer."""
    def run():
        def alarm(signum, frame):
            raise CaseTimeout(f"still running after {CASE_LIMIT_S} s")

        previous = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(CASE_LIMIT_S)
        try:
            return call()
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    return run


def main() -> int:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, resource.RLIM_INFINITY))
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from training.hydra_configs import register_policy_defaults

    register_policy_defaults()
    from data import export as export_mod
    from data import generate as generate_mod
    from tests import eval_fakes
    from tests.reliability import cases
    from tests.reliability.runners import (
        EVAL_TASKS,
        damage_a_chunk,
        fill,
        make_tiny_store,
        places,
        train_cfg,
        verdict_of_call,
        verdict_of_main,
    )
    from training.errors import USER_ERRORS
    from training.evaluate import EvalError, evaluate, load_config
    from training.run import train

    root = Path(tempfile.mkdtemp(prefix="verdicts-"))
    store = make_tiny_store(root / "s.zarr").path
    eval_fakes.register()
    ckpt = eval_fakes.write_checkpoint(root / "run" / "checkpoints" / "last.ckpt", EVAL_TASKS)
    where = {"store": store, **places(root / "p")}
    rows: list[dict] = []

    def record(entry: str, case: str, verdict: str, message: str) -> None:
        rows.append({"entry": entry, "case": case, "verdict": verdict, "message": message[:160]})

    for i, (case, overrides, _) in enumerate(cases.TRAIN_CASES):
        if case == "accelerator-absent" and torch.cuda.is_available():
            continue
        cfg = train_cfg(store, [fill(o, where) for o in overrides])
        verdict, message = verdict_of_call(_limited(lambda cfg=cfg, i=i: train(cfg, root / f"t{i}")), USER_ERRORS)
        if "can't allocate memory" in message or message.startswith(("MemoryError", "CaseTimeout")):
            verdict = "silent"  # without these limits the kernel kills it, or it grinds on, without a message
        record("train", case, verdict, message)
    for case, path, _ in cases.RUN_DIR_CASES:
        cfg = train_cfg(store, [])
        run_dir = Path(fill(path, where))
        record("train", case, *verdict_of_call(lambda cfg=cfg, d=run_dir: train(cfg, d), USER_ERRORS))
    for i, (case, overrides, _) in enumerate(cases.EVAL_CASES):
        base = [f"checkpoint={ckpt}", "n_episodes=2", "workers=1", "logger=none", "progress=false",
                f"env_factory={eval_fakes.__name__}:make_env", f"out={root / f'e{i}'}"]
        cfg = load_config(base + [fill(o, where) for o in overrides])

        def run_eval(cfg=cfg):
            info = evaluate(cfg)
            if info["aggregate"]["n_errors"]:
                raise RuntimeError(f"{info['aggregate']['n_errors']} errored episodes scored, exit 0")
            return info
        verdict, message = verdict_of_call(_limited(run_eval), (EvalError,))
        if message.startswith("CaseTimeout"):
            verdict = "silent"
        if message.startswith("RuntimeError:") and "errored episodes scored" in message:
            verdict = "silent"
        record("eval", case, verdict, message)
    for i, (case, argv, _) in enumerate(cases.GENERATE_CASES):
        v, m, code = verdict_of_main(generate_mod.main, ["task=lift", f"out={root / f'g{i}.zarr'}", "workers=0",
                                                         "n_episodes=1", *argv])
        record("generate", case, "silent" if v == "accepted" else v, m)
    for i, (case, argv, _) in enumerate(cases.EXPORT_CASES):
        tmp = root / f"x{i}"
        tmp.mkdir()
        src = store
        if "damaged" in argv:
            src = make_tiny_store(tmp / "damaged.zarr").path
            damage_a_chunk(Path(src))
            argv = [a for a in argv if a != "damaged"]
        v, m, code = verdict_of_main(export_mod.main, [src, *[fill(a, {**where, "tmp": str(tmp)}) for a in argv]])
        record("export", case, "silent" if v == "accepted" else v, m)
    from benchmarks.suite.__main__ import main as suite_main

    for case, argv, _ in cases.SUITE_CASES:
        v, m, code = verdict_of_main(suite_main, ["robosuite-state", "dry_run=true", *[fill(a, where) for a in argv]])
        record("suite", case, "silent" if v == "accepted" else v, m)
    for i, (case, argv) in enumerate(cases.ACCEPTED_CASES):
        tmp = root / f"a{i}"
        tmp.mkdir()
        v, m, code = verdict_of_main(export_mod.main, [store, *[fill(a, {**where, "tmp": str(tmp)}) for a in argv]])
        record("export", case, v if v != "clear" else "refused", m)
    shutil.rmtree(root, ignore_errors=True)
    counts = collections.Counter(r["verdict"] for r in rows)
    for r in rows:
        print(json.dumps(r), file=sys.stderr)
    print(json.dumps({"cases": len(rows), **dict(sorted(counts.items()))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
