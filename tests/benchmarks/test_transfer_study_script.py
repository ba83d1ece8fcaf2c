"""scripts/transfer_study_libero.sh: its commands (DRY_RUN=1 prints them, runs nothing) parse as train.py,
eval_rollouts.py, data.generate and the report parse them, and they are the study the docs describe."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

from benchmarks.transfer_report.runs import RUN_NAME
from tests.docs.doc_checks import ROOT, check_command

SCRIPT = ROOT / "scripts" / "transfer_study_libero.sh"


def dry_run(tmp_path) -> list[list[str]]:
    env = {**os.environ, "DRY_RUN": "1", "STUDY": "outputs/transfer_libero", "PYTHON": "python"}
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines()]


def value(cmd: list[str], key: str) -> str | None:
    return next((a.split("=", 1)[1] for a in cmd if a.startswith(key + "=")), None)


def test_the_script_parses_and_its_dry_run_writes_nothing(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    before, logs = set(os.listdir(ROOT)), ROOT / "outputs" / "transfer_libero" / "logs"
    had_logs = logs.exists()
    dry_run(tmp_path)
    assert set(os.listdir(ROOT)) == before and logs.exists() == had_logs


def test_every_command_parses_and_the_arms_are_the_study(tmp_path):
    cmds = dry_run(tmp_path)
    for cmd in cmds:
        check_command(shlex.join(cmd))
    trains = {os.path.basename(value(c, "run_dir")): c for c in cmds if c[1] == "train.py"}
    evals = [value(c, "checkpoint") for c in cmds if c[1] == "eval_rollouts.py"]
    arms = {name: RUN_NAME.match(name) for name in trains if name not in ("pre", "rand")}
    assert sorted((m["arm"], m["task"], int(m["n"]), int(m["seed"])) for m in arms.values()) == sorted(
        (arm, "libero_object_9", n, s) for arm in ("scratch", "ft", "ctrl") for n in (5, 20) for s in (0, 1, 2))
    assert sorted(evals) == sorted(f"outputs/transfer_libero/{name}" for name in arms)
    for name, m in arms.items():
        cmd = trains[name]
        assert (value(cmd, "data.max_train_episodes"), value(cmd, "seed")) == (m["n"], m["seed"])
        assert value(cmd, "init_from") == {"scratch": None, "ft": "outputs/transfer_libero/pre",
                                           "ctrl": "outputs/transfer_libero/rand"}[m["arm"]]
        assert value(cmd, "freeze") == (None if m["arm"] == "scratch" else '["*router*"]')
        assert value(cmd, "trainer.max_steps") == "1000" and value(cmd, "task.name") == "libero_object/9"
    # the control checkpoint is the pretraining run's config stopped after one step at lr 1e-12
    pre, rand = trains["pre"], trains["rand"]
    assert value(rand, "optim.lr") == "1e-12" and value(rand, "trainer.max_steps") == "1"
    same = ("policy", "task", "task.dataset", "task.n_demos", "seed")
    assert [value(pre, k) for k in same] == [value(rand, k) for k in same]
    # every evaluation uses the same episodes: no seed_offset or seeds of its own
    assert not [c for c in cmds if c[1] == "eval_rollouts.py" and re.search(r"\bseed", " ".join(c[2:]))]
