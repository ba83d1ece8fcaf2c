"""Small readers and writers the suite runner keeps its books with: JSON files written atomically, the
content hash of a demo store, the git state, the machine (package versions, CPU), checkpoint facts (step,
best-by-validation) and the summary of an eval_info.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import torch

from rollouts.plan import SHARED_NOISE

REPO = Path(__file__).resolve().parents[2]
# command-line arguments that only say where files go (they move with out=): not what decides a run's numbers
PATH_ARGS = ("task.dataset=", "run_dir=", "resume=", "checkpoint=", "out=")


def run_key(task: str, variant: str, seed: int) -> str:
    """How a run is named in logs and results: task/variant/seedS."""
    return f"{task}/{variant}/seed{seed}"


def run_dir(out: Path, task: str, variant: str, seed: int) -> Path:
    """Where a suite keeps a run: out/runs/<task>/<variant>/seed<S>/ (what results.finished_runs reads)."""
    return Path(out) / "runs" / run_key(task, variant, seed)


def write_json(path: Path, obj: Any) -> Path:
    """Temp file + rename: a reader (or a resumed suite) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or unreadable (an interrupted write counts as missing)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut short by a kill: the rest is still good
            continue
    return out


def store_sha256(path: Path) -> str:
    """sha256 over the store's zarr files (names and bytes, sorted). Files written beside the data, such as
    the language-embedding cache, are left out: they do not change the demonstrations."""
    h = hashlib.sha256()
    files = [path / "zarr.json"] + sorted(p for sub in ("data", "meta") for p in (path / sub).rglob("*")
                                          if p.is_file())
    for p in files:
        h.update(p.relative_to(path).as_posix().encode() + b"\0")
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def git_state() -> dict[str, Any]:
    """The commit the suite runs at and whether tracked files differ from it (read-only git)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=REPO)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


PACKAGES = ("torch", "numpy", "mujoco", "robosuite", "metaworld", "zarr", "numcodecs")


def machine() -> dict[str, Any]:
    """What a number can depend on besides the code and the config: the versions of the packages that
    compute it and the CPU, by model and by a digest of its feature flags (MuJoCo and the BLAS pick their
    SIMD paths by those, so two machines of one model name can still round differently)."""
    import platform
    from importlib import metadata

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    model, flags = None, ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and model is None:
                model = value
            elif key in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:  # not Linux: the platform's own name
        pass
    model = model or platform.processor() or platform.machine()
    return {"python": platform.python_version(), "packages": versions, "cpu": model,
            "cpu_flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:12] if flags else None,
            "cpu_count": os.cpu_count()}


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def global_step(path: Path) -> int | None:
    """The training step a checkpoint was written at; None when there is no readable checkpoint."""
    if not path.is_file():
        return None
    try:
        return int(load_checkpoint(path)["global_step"])
    except Exception:  # noqa: BLE001  (a truncated file from a kill: train again from scratch)
        return None


def best_checkpoint(last: Path) -> dict[str, Any] | None:
    """The top-1 checkpoint by the monitored metric, as Lightning's ModelCheckpoint recorded it in `last`'s
    `callbacks` entry: {path, monitor, score, global_step}; None when the run kept none (no validation)."""
    ckpt = load_checkpoint(last)
    for key, state in (ckpt.get("callbacks") or {}).items():
        if not key.startswith("ModelCheckpoint") or not state.get("best_model_path"):
            continue
        # Lightning stores absolute paths; take the file name so that a moved run directory still works.
        path = last.parent / Path(state["best_model_path"]).name
        if not path.is_file():
            return None
        score = state.get("best_model_score")
        return {"path": path, "monitor": state.get("monitor"), "global_step": global_step(path),
                "score": float(score) if score is not None else None}
    return None


def seeds_digest(seeds: list[int]) -> dict[str, Any]:
    """A compact record of the evaluation seeds: equal digests mean identical seeds."""
    return {"n": len(seeds), "first": min(seeds) if seeds else None, "last": max(seeds) if seeds else None,
            "sha256": hashlib.sha256(json.dumps(seeds).encode()).hexdigest()[:16]}


def eval_summary(info: dict[str, Any]) -> dict[str, Any]:
    """The numbers of an eval_info.json a suite keeps: overall and per task, with Wilson 95% intervals."""
    keys = ("success_rate", "success_ci95", "n_success", "n_episodes", "n_errors")
    agg = info["aggregate"]
    return {
        **{k: agg[k] for k in keys},
        "per_task": {name: {k: s[k] for k in keys} for name, s in info["per_task"].items()},
        "seeds": seeds_digest([int(e["seed"]) for e in info["episodes"]]),
        "rollout_wall_s": agg.get("wall_s"),
        "global_step": info.get("global_step"),
        "sampling_noise": agg["sampling_noise"],  # the runner keeps only evaluations that record it
    }


def sampling_noise(summary: dict[str, Any]) -> str:
    """How an evaluation summary's episodes drew their sampling noise (rollouts/plan.py Plan.sampling_noise):
    a summary from before the key existed was scored with the shared stream."""
    return summary.get("sampling_noise") or SHARED_NOISE


def predates_recorded_noise(run: dict[str, Any]) -> bool:
    """Whether an evaluation of the run was made before evaluations recorded their sampling noise: then its
    episodes drew from one shared stream in the order the workers' replies came, so the score depended on
    that order (`rescore=true` evaluates such a run again)."""
    return any(s is not None and "sampling_noise" not in s for s in run["eval"].values())
