"""One owner for a run directory, and what a resumed run may change.

    lock = claim_run_dir(run_dir)                 # <run dir>/.lock (pid + host); LockError if a live run holds it
    changes = check_resume_config(run_dir, cfg)   # ConfigError naming every key that cannot change on resume
    record_resume(run_dir, changes, step)         # one line in <run dir>/resumes.jsonl: the new segment
    argv = train_argv(sys.argv[1:])               # before Hydra writes: resume= runs in its own directory

config.yaml is written once, by the run's first segment, and never rewritten: it says what the steps
already trained were trained with. A resume that changes what may change (RESUME_MAY_CHANGE: the step
budget, logging, checkpoint cadence, loader workers...) is recorded as a segment starting at the step it
resumed from; anything else (the store, the batch, the policy, the optimiser...) is refused in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from data.dir_lock import DirLock, LockError, holder_is_live, read_holder
from training.config_check import ConfigError, check_output_dir

__all__ = ["LockError", "claim_run_dir", "discard_refused_run_dir", "check_resume_config", "record_resume",
           "train_argv", "RESUME_MAY_CHANGE", "LOCK_NAME", "RESUMES_NAME"]

LOCK_NAME = ".lock"
RESUMES_NAME = "resumes.jsonl"
# Keys (or key prefixes, ending in ".") a resumed run may set differently from the steps before it.
RESUME_MAY_CHANGE = ("resume", "run_dir", "threads", "trainer.max_steps", "optim.total_steps",
                     "trainer.print_every_n_steps", "trainer.log_every_n_steps", "trainer.enable_progress_bar",
                     "trainer.val_check_interval", "trainer.limit_val_batches", "trainer.val_sample_batches",
                     "checkpoint.every_n_steps", "checkpoint.every_n_minutes", "rollout_eval.", "logger.",
                     "data.num_workers", "data.pin_memory", "data.in_memory", "data.cache_mb", "data.cache_dir",
                     "data.root", "task.generate_workers")


class RunDirClaim:
    """The lock of a run directory; on release, a directory this claim created and nothing else used is
    removed again (a run refused before its first write leaves nothing behind)."""

    def __init__(self, run_dir: Path, created: bool) -> None:
        self.run_dir, self.created = run_dir, created
        self.lock = DirLock(run_dir / LOCK_NAME, what="run directory (hydra.run.dir=...)")

    def release(self) -> None:
        self.lock.release()
        if self.created:
            try:
                self.run_dir.rmdir()  # only when empty
            except OSError:
                pass


def is_worker_rank() -> bool:
    """A data-parallel process other than the first (Lightning starts them with these set): the first
    rank holds the run directory for all of them."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


class _Unclaimed(RunDirClaim):
    def release(self) -> None:
        pass


def claim_run_dir(run_dir: Path) -> RunDirClaim:
    """Create (if needed) and lock `run_dir` for this process; LockError when a live run holds it."""
    check_output_dir(run_dir, "hydra.run.dir")
    if is_worker_rank():
        run_dir.mkdir(parents=True, exist_ok=True)
        return _Unclaimed(run_dir, created=False)
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"hydra.run.dir: cannot create {run_dir}: {err.strerror}") from None
    claim = RunDirClaim(run_dir, created)
    try:
        claim.lock.acquire()
    except LockError:
        claim.created = False
        raise
    return claim


HYDRA_FILES = frozenset({"train.log", ".hydra"})  # what Hydra writes into a run directory before train() runs


def discard_refused_run_dir(run_dir: Path, hydra_subdir: str | None = None) -> None:
    """After a refusal: a run directory holding nothing but Hydra's log and .hydra/ (no run ever wrote
    into it) is removed, and so is Hydra's record of a refused resume, so a refused command leaves
    nothing behind (but its line in an existing run's train.log)."""
    if hydra_subdir and hydra_subdir.startswith(".hydra/resume-"):
        shutil.rmtree(run_dir / hydra_subdir, ignore_errors=True)
    try:
        held = {p.name for p in run_dir.iterdir()}
    except OSError:
        return
    if not held <= HYDRA_FILES or run_dir.resolve() == Path.cwd().resolve():
        return
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    (run_dir / "train.log").unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        pass


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _may_change(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUME_MAY_CHANGE)


def recorded_config(run_dir: Path) -> dict[str, Any] | None:
    """config.yaml with every recorded resume's changes applied: what the latest segment ran with."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    flat = _flat(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
    resumes = run_dir / RESUMES_NAME
    if resumes.is_file():
        for line in resumes.read_text().splitlines():
            if line.strip():
                for key, (_, new) in json.loads(line).get("changed", {}).items():
                    flat[key] = new
    return flat


def check_resume_config(run_dir: Path, cfg: dict[str, Any], trained_on: str | None = None) -> dict[str, list]:
    """The changes a resume makes ({key: [old, new]}), after refusing those that cannot change."""
    if trained_on and os.path.abspath(trained_on) != os.path.abspath(cfg["task"]["dataset"]):
        raise ConfigError(f"task.dataset cannot change on resume: the run trained on {trained_on}, this "
                          f"command names {cfg['task']['dataset']}; start a new run (or init from it) instead")
    before = recorded_config(run_dir)
    if before is None:
        return {}
    now = _flat(cfg)
    changed = {k: [before.get(k), now.get(k)] for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)}
    refused = [k for k in changed if not _may_change(k)]
    if refused:
        shown = ", ".join(f"{k}={changed[k][1]!r} (was {changed[k][0]!r})" for k in refused[:6])
        raise ConfigError(f"resume: {shown}{' ...' if len(refused) > 6 else ''} cannot change on resume "
                          f"({run_dir / 'config.yaml'} records what the earlier steps trained with); drop these "
                          "overrides, or start a new run")
    return {k: v for k, v in changed.items() if k not in ("resume", "run_dir")}


def record_resume(run_dir: Path, changes: dict[str, list], step: int, command: str) -> None:
    entry = {"step": int(step), "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "changed": changes,
             "command": command}
    with open(run_dir / RESUMES_NAME, "a") as f:
        f.write(json.dumps(entry) + "\n")


# --- before Hydra creates the directory -------------------------------------------------------
def _value(argv: list[str], *keys: str) -> tuple[int, str] | None:
    for i, item in enumerate(argv):
        key, sep, value = item.lstrip("+").partition("=")
        if sep and key in keys:
            return i, value
    return None


def train_argv(argv: list[str]) -> list[str]:
    """train.py's arguments, checked before Hydra makes (and logs into) the run directory: `resume=` runs
    in the resumed run's own directory (a different hydra.run.dir / run_dir with it is refused), the
    directory is a writable place, and no live run holds it. Raises ConfigError / CheckpointError /
    LockError (one line each)."""
    from training.checkpoint import resolve_checkpoint, run_dir_of

    resume = _value(argv, "resume")
    given = _value(argv, "hydra.run.dir") or _value(argv, "run_dir")
    if resume and resume[1] not in ("", "null", "None"):
        run_dir = run_dir_of(resolve_checkpoint(resume[1])).resolve()
        if given and "${" not in given[1] and Path(given[1]).resolve() != run_dir:
            raise ConfigError(f"hydra.run.dir={given[1]}: resume= continues the run in its own directory "
                              f"({run_dir}); drop hydra.run.dir / run_dir, or start a new run there")
        # Hydra's own record of this segment goes beside the first one's, not over it.
        argv = [a for i, a in enumerate(argv) if not given or i != given[0]] + [
            f"hydra.run.dir={run_dir}", f"hydra.output_subdir=.hydra/resume-{time.strftime('%Y%m%d-%H%M%S')}"]
    elif given and "${" not in given[1]:
        run_dir = Path(given[1])
    else:
        return argv
    check_output_dir(run_dir, "hydra.run.dir")
    if is_worker_rank():
        return argv
    holder = read_holder(run_dir / LOCK_NAME)
    if holder is not None and holder_is_live(holder):
        DirLock(run_dir / LOCK_NAME, what="run directory (hydra.run.dir=...)").acquire()  # raises its line
    return argv
