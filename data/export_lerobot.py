"""A demo store as a LeRobot v3.0 dataset directory.

    out/meta/info.json                           codebase_version v3.0, features, fps, path templates
    out/meta/tasks.parquet                       task_index + task string (pandas index "task")
    out/meta/episodes/chunk-000/file-000.parquet one row per episode: length, tasks, data/video spans,
                                                 the episode's stats (columns stats/<feature>/<stat>)
    out/meta/stats.json                          min/max/mean/std/count/q01/q10/q50/q90/q99 per feature
                                                 (images per channel in [0, 1]; data/export_lerobot_stats.py)
    out/meta/mode_il.json                        what LeRobot has no place for (below)
    out/data/chunk-000/file-000.parquet          observation.state, action, timestamp, frame_index,
                                                 episode_index, index, task_index (one row per step)
    out/videos/observation.images.<cam>/chunk-000/file-000.mp4   all episodes back to back

Keys: the float low-dim observation keys are concatenated (sorted by name) into `observation.state`, as
LeRobot policies expect one state vector; other low-dim keys become `observation.<key>`, a store's
simulator `states` become `sim_states`, camera `<cam>_image` becomes `observation.images.<cam>`.
meta/mode_il.json keeps the store's task names, instructions and env specs, action space, other
attributes, per-episode seeds and success flags, and how observation.state splits back into keys, so
that converting the export (`python -m data.convert out/`) gives back the same store.

Images: the default codec, libx264rgb at qp=0, is lossless here (every pixel comes back); libsvtav1
(LeRobot's own default) and libx264 in yuv420p are lossy (see data/convert/lerobot_video.py).
The store is only read; the export is built in a hidden sibling directory and renamed into place at the
end, so a failure never leaves a half-written dataset at `out_dir`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.convert.lerobot_meta import SIDECAR
from data.convert.lerobot_video import VIDEO_CODECS, VideoWriter
from data.export import ExportError  # one error class for both exports (python -m data.export prints it)
from data.export_lerobot_stats import ImageStats, LowDimStats
from data.store import FORMAT, DemoStore, is_image_key

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")  # LeRobot's own columns
_STORE_ATTRS = ("format", "format_version", "tasks", "action_space")  # kept elsewhere in the sidecar


def _feature_names(store: DemoStore) -> tuple[dict[str, str], list[tuple[str, list[int]]]]:
    """{store key: LeRobot feature} for keys with a feature of their own, and the observation.state layout."""
    features, layout = {"action": "action"}, []
    for key in store.keys:
        arr = store.array(key)
        if key == "action":
            continue
        if is_image_key(key, np.empty((0, *arr.shape[1:]), arr.dtype)):
            features[key] = "observation.images." + (key[: -len("_image")] if key.endswith("_image") else key)
        elif key == "states":
            features[key] = "sim_states"
        elif np.dtype(arr.dtype).kind == "f":
            layout.append((key, list(arr.shape[1:])))
        else:
            features[key] = f"observation.{key}"
    return features, layout


def _flat(values: np.ndarray) -> pa.Array:
    n = len(values)
    flat = np.ascontiguousarray(values).reshape(n, -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])


def _tasks_table(store: DemoStore) -> pa.Table:
    texts, seen = [], set()
    for t in store.tasks:
        text = t["instruction"] or t["name"]  # LeRobot's tasks are unique strings
        if text in seen:
            text = f"{text} ({t['name']})"
        seen.add(text)
        texts.append(text)
    table = pa.table({"task_index": pa.array(range(len(texts)), pa.int64()), "task": pa.array(texts, pa.string())})
    # pandas metadata as pandas writes it, so LeRobot's pd.read_parquet gets the strings as its index.
    pandas_meta = {"index_columns": ["task"], "column_indexes": [{"name": None, "field_name": None,
                   "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": "task", "field_name": "task", "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}],
                   "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def export_lerobot(store_path: str | os.PathLike, out_dir: str | os.PathLike, fps: int = 20,
                   video_codec: str = "libx264rgb", robot_type: str | None = None) -> Path:
    """Write the store at `store_path` as a LeRobot v3.0 dataset at `out_dir` (which must not exist)."""
    if video_codec not in VIDEO_CODECS:
        raise ExportError(f"video_codec must be one of {sorted(VIDEO_CODECS)}, got {video_codec!r}")
    if not isinstance(fps, int) or fps <= 0:
        raise ExportError(f"fps must be a positive integer, got {fps!r}")
    out = Path(out_dir)
    if out.exists():
        raise ExportError(f"{out} already exists; choose another output directory (nothing is overwritten)")
    store = DemoStore.open(store_path, "r")
    if store.n_episodes == 0:
        raise ExportError(f"{store_path}: the store has no episodes to export")
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    _remove_dead_partials(out)
    if partial.exists():
        shutil.rmtree(partial)  # our own leftover from a crashed export of the same name by this pid
    try:
        _write(store, partial, fps, video_codec, robot_type)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def _remove_dead_partials(out: Path) -> None:
    """Hidden partial folders of earlier exports to `out` whose process is gone (killed): removed, so a
    kill leaves nothing behind once the export is run again. A live export's partial folder is left alone."""
    from data.dir_lock import holder_is_live

    for leftover in out.parent.glob(f".{out.name}.partial-*"):
        pid = leftover.name.rsplit("-", 1)[1]
        if pid.isdigit() and not holder_is_live({"pid": int(pid), "host": socket.gethostname()}):
            shutil.rmtree(leftover, ignore_errors=True)


def _write(store: DemoStore, root: Path, fps: int, codec: str, robot_type: str | None) -> None:
    features, layout = _feature_names(store)
    cameras = {k: f for k, f in features.items() if f.startswith("observation.images.")}
    columns = {k: f for k, f in features.items() if k not in cameras}
    ends, tasks = store.episode_ends, store.episode_task
    stats: dict[str, LowDimStats | ImageStats] = {f: LowDimStats() for f in [*columns.values(), *INDEX_COLUMNS]}
    stats.update({f: ImageStats() for f in cameras.values()})
    if layout:
        stats["observation.state"] = LowDimStats()
    (root / "data/chunk-000").mkdir(parents=True)
    source = {k: store.array(k) for k in store.keys}  # one zarr lookup per key, not one per episode
    writer, videos, episodes = None, {}, []
    try:
        for e in range(store.n_episodes):
            start, stop = int(ends[e - 1]) if e else 0, int(ends[e])
            ep = {k: np.asarray(a[start:stop]) for k, a in source.items()}
            n = stop - start
            values: dict[str, np.ndarray] = {}  # LeRobot feature -> this episode's rows
            if layout:
                values["observation.state"] = np.concatenate([ep[k].reshape(n, -1) for k, _ in layout],
                                                             axis=1).astype(np.float32)
            values.update({feat: ep[key] for key, feat in columns.items()})
            frame = np.arange(n, dtype=np.int64)
            index_values = {"timestamp": (frame / fps).astype(np.float32), "frame_index": frame,
                            "episode_index": np.full(n, e, np.int64), "index": start + frame,
                            "task_index": np.full(n, int(tasks[e]), np.int64)}
            ep_stats = {f: stats[f].add(v) for f, v in {**values, **index_values}.items()}
            cols = {f: _flat(v) for f, v in values.items()}
            cols.update({f: pa.array(v) for f, v in index_values.items()})
            table = pa.table(cols)
            if writer is None:
                writer = pq.ParquetWriter(root / DATA_PATH.format(chunk_index=0, file_index=0), table.schema)
            writer.write_table(table)
            row = {"episode_index": e, "tasks": [None], "length": n, "data/chunk_index": 0, "data/file_index": 0,
                   "dataset_from_index": start, "dataset_to_index": start + n}
            for key, feat in cameras.items():
                frames = ep[key]
                if feat not in videos:
                    path = root / VIDEO_PATH.format(video_key=feat, chunk_index=0, file_index=0)
                    videos[feat] = VideoWriter(path, fps, frames.shape[2], frames.shape[1], codec)
                row.update({f"videos/{feat}/chunk_index": 0, f"videos/{feat}/file_index": 0,
                            f"videos/{feat}/from_timestamp": videos[feat].n_frames / fps,
                            f"videos/{feat}/to_timestamp": (videos[feat].n_frames + n) / fps})
                videos[feat].write(frames)
                ep_stats[feat] = stats[feat].add(frames)
            row.update({f"stats/{feat}/{k}": v for feat, s in ep_stats.items() for k, v in s.items()})
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            episodes.append(row)
    finally:
        if writer is not None:
            writer.close()
    video_info = {feat: v.close() for feat, v in videos.items()}
    task_table = _tasks_table(store)
    texts = task_table["task"].to_pylist()
    for row in episodes:
        row["tasks"] = [texts[int(tasks[row["episode_index"]])]]
    (root / EPISODES_FILE).parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episodes), root / EPISODES_FILE)
    pq.write_table(task_table, root / "meta/tasks.parquet")
    info = _info(store, features, layout, cameras, video_info, fps, robot_type, len(texts))
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    (root / "meta/stats.json").write_text(json.dumps({f: s.total() for f, s in stats.items()}, indent=4))
    (root / SIDECAR).write_text(json.dumps({
        "format": FORMAT, "store_format_version": store.attrs.get("format_version"), "tasks": store.tasks,
        "action_space": store.action_space, "attrs": {k: v for k, v in store.attrs.items() if k not in _STORE_ATTRS},
        "episode_seed": store.episode_seed.tolist(), "episode_success": store.episode_success.tolist(),
        "key_map": {f: k for k, f in features.items()}, "state_layout": layout}, indent=2))


def _info(store: DemoStore, features: dict[str, str], layout: list, cameras: dict[str, str],
          video_info: dict[str, dict[str, str]], fps: int, robot_type: str | None, n_tasks: int) -> dict[str, Any]:
    feats: dict[str, Any] = {}
    if layout:
        names = [f"{k}_{i}" if int(np.prod(s)) > 1 else k for k, s in layout for i in range(int(np.prod(s)))]
        feats["observation.state"] = {"dtype": "float32", "shape": [len(names)], "names": names}
    for key, feat in features.items():
        arr = store.array(key)
        if key in cameras:
            h, w, c = arr.shape[1:]
            feats[feat] = {"dtype": "video", "shape": [h, w, c], "names": ["height", "width", "channels"],
                           "info": {"video.height": h, "video.width": w, **video_info[feat], "video.is_depth_map":
                                    False, "video.fps": fps, "video.channels": c, "has_audio": False}}
        else:
            feats[feat] = {"dtype": str(np.dtype(arr.dtype)), "shape": list(arr.shape[1:]), "names": None}
    for name in INDEX_COLUMNS:
        feats[name] = {"dtype": "float32" if name == "timestamp" else "int64", "shape": [1], "names": None}
    specs = [t.get("env_spec") or {} for t in store.tasks]
    robot = robot_type or next((s.get("robot") for s in specs if s.get("robot")), None) or "unknown"
    return {"codebase_version": "v3.0", "robot_type": robot, "total_episodes": store.n_episodes,
            "total_frames": store.n_steps, "total_tasks": n_tasks, "chunks_size": 1000,
            "data_files_size_in_mb": 100, "video_files_size_in_mb": 500, "fps": fps,
            "splits": {"train": f"0:{store.n_episodes}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if cameras else None, "features": feats}
