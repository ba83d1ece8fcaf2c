"""What every benchmark shares: the JSON-line record format of DESIGN.md and a median timer."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Make the project importable when a benchmark is run as `python benchmarks/<name>.py`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def device_name(device: str = "cpu") -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0).replace(" ", "-")
    return "cpu"


class Recorder:
    """Prints one JSON object per line and, with `save`, appends them to results/<bench>-<device>.jsonl."""

    def __init__(self, bench: str, device: str = "cpu", save: bool = False) -> None:
        self.bench, self.device, self.save = bench, device, save
        self.records: list[dict[str, Any]] = []

    def emit(self, case: str, metric: str, value: float, unit: str = "", **context: Any) -> dict[str, Any]:
        rec = {"bench": self.bench, "case": case, "metric": metric, "value": round(float(value), 6),
               "unit": unit, "device": device_name(self.device), "torch": torch.__version__.split("+")[0],
               "host_cpus": os.cpu_count(), "machine": platform.machine(), **context}
        print(json.dumps(rec), flush=True)
        self.records.append(rec)
        return rec

    def ratio(self, case: str, metric: str, value: float, **context: Any) -> dict[str, Any]:
        return self.emit(case, metric, value, unit="x", **context)

    def write(self) -> Path | None:
        if not self.save or not self.records:
            return None
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.bench}-{device_name(self.device)}.jsonl"
        with path.open("w") as f:
            for rec in self.records:
                f.write(json.dumps(rec) + "\n")
        return path


def median_seconds(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1,
                   sync: Callable[[], Any] | None = None) -> float:
    """Median wall time of `fn` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
