"""Windows per second from a state store and an 84x84 image store, in memory vs zarr-backed.

    python benchmarks/data_throughput.py [--quick] [--save]

Cases (metric windows_per_s): state-memory, state-zarr, image-memory, image-zarr (zarr-backed with the
default decoded-chunk cache, warm: the store fits, as it does from the second epoch on),
image-zarr-cold (a fresh dataset's first batches: every chunk read once) and image-zarr-nocache
(cache_mb=0: every batch reads its chunks, what a store much larger than the cache sees). Ratio lines
(metric throughput_ratio): memory_vs_zarr-<kind> (memory / zarr) and <zarr case>_vs_image-memory
(zarr / memory). Every case times passes over fresh random batches, interleaved round by round
(A, B, A, B ...), and reports the median. The stores are synthetic with the shapes of the default tasks
(Lift state: 7-d actions and ~19-d state; image: two 84x84 cameras of render-like frames that compress
~8x, as robosuite renders do, so chunk decoding costs what it costs on real data).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import Recorder

from data.chunk_cache import DEFAULT_CACHE_MB
from data.dataset import DemoDataset
from data.store import DemoStore

STATE_KEYS = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object-state": 10}
CAMERAS = ("agentview_image", "robot0_eye_in_hand_image")


def render_like(rng: np.random.Generator, length: int, size: int = 84) -> np.ndarray:
    """Frames of a wall, a grained table and a moving shaded cube: compress and decode like renders."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    wall = np.stack([0.55 + 0.2 * yy, 0.6 + 0.1 * xx, 0.7 + 0.0 * xx], -1)
    table = np.stack([0.45 + 0.1 * xx, 0.3 + 0.05 * yy, 0.2 + 0.0 * xx], -1)
    grain = (np.sin(xx * 90 + np.sin(yy * 23) * 3) * 0.03)[..., None]
    horizon = int(size * rng.uniform(0.3, 0.45))
    scene = np.where((np.arange(size) < horizon)[:, None, None], wall, table + grain)
    start, end, color = rng.uniform(0.2, 0.8, 2), rng.uniform(0.2, 0.8, 2), rng.uniform(0.2, 1.0, 3)
    frames = np.empty((length, size, size, 3), np.uint8)
    for t in range(length):
        img = scene.copy()
        cy, cx = ((start + (end - start) * t / max(length - 1, 1)) * size).astype(int)
        shade = 0.75 + 0.25 * np.clip((yy[cy - 6:cy + 6, cx - 6:cx + 6] - yy[cy, cx]) * 8 + 0.5, 0, 1)
        img[cy - 6:cy + 6, cx - 6:cx + 6] = color * shade[..., None]
        frames[t] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return frames


def build_store(path: Path, n_episodes: int, length: int, images: bool) -> DemoStore:
    rng = np.random.default_rng(0)
    store = DemoStore.create(path, tasks=[{"name": "lift", "instruction": "lift the cube", "env_spec": {}}])
    for i in range(n_episodes):
        ep = {k: rng.normal(size=(length, d)).astype(np.float32) for k, d in STATE_KEYS.items()}
        ep["action"] = rng.uniform(-1, 1, size=(length, 7)).astype(np.float32)
        if images:
            for cam in CAMERAS:
                ep[cam] = render_like(rng, length)
        store.append_episode(ep, seed=i)
    return store


def pass_seconds(dataset: DemoDataset, batches: list[np.ndarray]) -> float:
    t0 = time.perf_counter()
    for b in batches:
        dataset.__getitems__(b)
    return time.perf_counter() - t0


def chunks_read(dataset: DemoDataset) -> int:
    return 0 if dataset._in_memory else sum(r.chunks_read for r in dataset._source.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller stores and fewer batches (seconds)")
    parser.add_argument("--smoke", action="store_true", help="tiny stores, one batch: checks the script runs")
    parser.add_argument("--save", action="store_true", help="write results/data_throughput-<device>.jsonl")
    args = parser.parse_args()
    args.save = args.save and not args.smoke
    rec = Recorder("data_throughput", save=args.save)
    windows, batch = (2, 10, 8), 32 if args.smoke else 256
    n_batches, rounds = (1, 1) if args.smoke else (3, 3) if args.quick else (10, 5)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for kind, images in (("state", False), ("image", True)):
            full = (100, 150) if not images else (20, 150)
            n_eps, length = (3, 30) if args.smoke else (10, 100) if args.quick else full
            t0 = time.perf_counter()
            store = build_store(Path(tmp) / f"{kind}.zarr", n_eps, length, images)
            build_s = time.perf_counter() - t0
            keys = list(STATE_KEYS) + (list(CAMERAS) if images else [])

            def make(in_memory: bool, cache_mb: float = DEFAULT_CACHE_MB) -> DemoDataset:
                return DemoDataset(store, keys, *windows, in_memory=in_memory, cache_mb=cache_mb)  # noqa: B023

            datasets = {"memory": make(True), "zarr": make(False)}
            warm_up = np.array_split(rng.permutation(len(datasets["zarr"])), -(-len(datasets["zarr"]) // batch))
            pass_seconds(datasets["zarr"], warm_up)  # one epoch: the cache now holds the store
            if images:
                datasets["zarr-nocache"] = make(False, cache_mb=0)
            cases = [*datasets, "zarr-cold"] if images else list(datasets)
            times: dict[str, list[float]] = {c: [] for c in cases}
            reads: dict[str, list[int]] = {c: [] for c in cases}
            for _ in range(rounds):
                for case in cases:
                    ds = make(False) if case == "zarr-cold" else datasets[case]
                    batches = [rng.integers(0, len(ds), batch) for _ in range(n_batches)]
                    before = chunks_read(ds)
                    times[case].append(pass_seconds(ds, batches))
                    reads[case].append(chunks_read(ds) - before)
            rates = {c: batch * n_batches / statistics.median(t) for c, t in times.items()}
            for case, rate in rates.items():
                cache = 0 if case in ("memory", "zarr-nocache") else DEFAULT_CACHE_MB
                rec.emit(f"{kind}-{case}", "windows_per_s", rate, "windows/s", batch_size=batch,
                         n_obs_steps=windows[0], horizon=windows[1], episodes=n_eps, steps=store.n_steps,
                         keys=len(keys), cache_mb=cache, chunks_read_per_batch=statistics.median(reads[case])
                         / n_batches, rounds=rounds, store_write_s=round(build_s, 2))
            rec.ratio(f"memory_vs_zarr-{kind}", "throughput_ratio", rates["memory"] / rates["zarr"])
            if images:
                for case in ("zarr", "zarr-cold", "zarr-nocache"):
                    rec.ratio(f"image-{case}_vs_image-memory", "throughput_ratio", rates[case] / rates["memory"])
    path = rec.write()
    if path:
        print(f"# saved {path}")


if __name__ == "__main__":
    main()
