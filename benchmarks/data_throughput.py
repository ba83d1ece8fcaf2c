"""Windows per second from a state store and an 84x84 image store, in memory vs zarr-backed.

    python benchmarks/data_throughput.py [--quick] [--save]

Cases: state-memory, state-zarr, image-memory, image-zarr (metric windows_per_s), plus the
ratio lines memory_vs_zarr-<kind> (metric throughput_ratio). The stores are synthetic with
the shapes of the default tasks (Lift state: 7-d actions and ~40-d state; image: two 84x84
cameras), written to a temporary directory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import Recorder, median_seconds

from data.dataset import DemoDataset
from data.store import DemoStore

STATE_KEYS = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object-state": 10}
CAMERAS = ("agentview_image", "robot0_eye_in_hand_image")


def build_store(path: Path, n_episodes: int, length: int, images: bool) -> DemoStore:
    rng = np.random.default_rng(0)
    store = DemoStore.create(path, tasks=[{"name": "lift", "instruction": "lift the cube", "env_spec": {}}])
    for i in range(n_episodes):
        ep = {k: rng.normal(size=(length, d)).astype(np.float32) for k, d in STATE_KEYS.items()}
        ep["action"] = rng.uniform(-1, 1, size=(length, 7)).astype(np.float32)
        if images:
            for cam in CAMERAS:
                ep[cam] = rng.integers(0, 256, size=(length, 84, 84, 3), dtype=np.uint8)
        store.append_episode(ep, seed=i)
    return store


def windows_per_s(dataset: DemoDataset, batch_size: int, n_batches: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, len(dataset), batch_size) for _ in range(n_batches)]

    def run() -> None:
        for b in batches:
            dataset.__getitems__(b)

    return batch_size * n_batches / median_seconds(run, repeats=repeats, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller stores and fewer batches (seconds)")
    parser.add_argument("--save", action="store_true", help="write results/data_throughput-<device>.jsonl")
    args = parser.parse_args()
    rec = Recorder("data_throughput", save=args.save)
    n_obs_steps, horizon, n_action_steps, batch = 2, 10, 8, 256
    with tempfile.TemporaryDirectory() as tmp:
        for kind, images in (("state", False), ("image", True)):
            n_eps, length = (10, 100) if args.quick else ((100, 150) if not images else (20, 150))
            t0 = time.perf_counter()
            store = build_store(Path(tmp) / f"{kind}.zarr", n_eps, length, images)
            build_s = time.perf_counter() - t0
            keys = list(STATE_KEYS) + (list(CAMERAS) if images else [])
            rates = {}
            for backing in ("memory", "zarr"):
                ds = DemoDataset(store, keys, n_obs_steps, horizon, n_action_steps, in_memory=backing == "memory")
                n_batches = 2 if (args.quick or backing == "zarr") else 20
                rates[backing] = windows_per_s(ds, batch, n_batches, repeats=3 if args.quick else 5)
                rec.emit(f"{kind}-{backing}", "windows_per_s", rates[backing], "windows/s",
                         batch_size=batch, n_obs_steps=n_obs_steps, horizon=horizon, episodes=n_eps,
                         steps=store.n_steps, keys=len(keys), store_write_s=round(build_s, 2))
            rec.ratio(f"memory_vs_zarr-{kind}", "throughput_ratio", rates["memory"] / rates["zarr"])
    path = rec.write()
    if path:
        print(f"# saved {path}")


if __name__ == "__main__":
    main()
