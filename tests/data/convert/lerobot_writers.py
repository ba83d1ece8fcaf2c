"""Tiny LeRobot v2.1 and v3.0 dataset directories, written here with pyarrow and PyAV (never downloaded).

Independent of data/export_lerobot.py on purpose: the reader is tested against the layout as LeRobot
writes it, not against our own writer.
"""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

FPS = 10
FRONT, WRIST = "observation.images.front", "observation.images.wrist"


def smooth_frames(rng: np.random.Generator, length: int, h: int = 16, w: int = 16) -> np.ndarray:
    """Random but spatially smooth frames (random pixels are the worst case for a lossy codec)."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((length, h, w, 3), np.uint8)
    for t in range(length):
        phase = rng.uniform(0, 6.28, 3)
        out[t] = (127 + 100 * np.sin(xx[..., None] / 5 + yy[..., None] / 7 + phase)).astype(np.uint8)
    return out


def make_episodes(lengths, n_tasks: int = 2, seed: int = 0, h: int = 16, w: int = 16) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"state": rng.normal(size=(n, 4)).astype(np.float32), "action": rng.normal(size=(n, 3)).astype(np.float32),
             "front": rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8),
             "wrist": rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8), "task": i % n_tasks}
            for i, n in enumerate(lengths)]


def write_mp4(path: Path, frames: np.ndarray, codec: str = "libx264rgb") -> None:
    """Frame n at n / FPS; libx264rgb at qp=0 is lossless, libsvtav1 is AV1 as LeRobot writes it."""
    pix_fmt, options = ("rgb24", {"qp": "0"}) if codec == "libx264rgb" else ("yuv420p", {"crf": "20"})
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream(codec, rate=FPS, options=options)
        s.width, s.height, s.pix_fmt, s.time_base = frames.shape[2], frames.shape[1], pix_fmt, Fraction(1, FPS)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            c.mux(s.encode(vf))
        c.mux(s.encode())


def _png(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def _vec(x: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])


def _frames_table(ep: dict, e: int, start: int, png_wrist: bool) -> pa.Table:
    n = len(ep["action"])
    cols = {"observation.state": _vec(ep["state"]), "action": _vec(ep["action"]),
            "timestamp": pa.array((np.arange(n) / FPS).astype(np.float32)), "frame_index": pa.array(np.arange(n)),
            "episode_index": pa.array(np.full(n, e)), "index": pa.array(start + np.arange(n)),
            "task_index": pa.array(np.full(n, ep["task"]))}
    if png_wrist:
        cells = [{"bytes": _png(f), "path": None} for f in ep["wrist"]]
        cols[WRIST] = pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    return pa.table(cols)


def _info(version: str, episodes: list[dict], n_tasks: int, png_wrist: bool, codec: str) -> dict:
    h, w = episodes[0]["front"].shape[1:3]
    feats = {"observation.state": {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "g"]},
             "action": {"dtype": "float32", "shape": [3], "names": None},
             FRONT: {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                     "info": {"video.fps": FPS, "video.codec": "av1" if codec == "libsvtav1" else "h264"}},
             **{k: {"dtype": d, "shape": [1], "names": None} for k, d in (
                 ("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"),
                 ("task_index", "int64"))}}
    if png_wrist:
        feats[WRIST] = {"dtype": "image", "shape": [h, w, 3], "names": ["height", "width", "channels"]}
    v3 = version == "v3.0"
    return {"codebase_version": version, "robot_type": "panda", "total_episodes": len(episodes),
            "total_frames": sum(len(e["action"]) for e in episodes), "total_tasks": n_tasks, "chunks_size": 1000,
            "fps": FPS, "splits": {"train": f"0:{len(episodes) - 1}", "val": f"{len(episodes) - 1}:{len(episodes)}"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet" if v3
            else "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4" if v3
            else "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
            "features": feats}


def write_v21(root: Path, episodes: list[dict], tasks: list[str], png_wrist: bool = True,
              codec: str = "libx264rgb", short: dict[int, int] | None = None) -> Path:
    """One parquet and one mp4 per episode; `short` = {episode: frames to leave out of its mp4}."""
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(_info("v2.1", episodes, len(tasks), png_wrist, codec)))
    (root / "meta/tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n"
                                                   for i, t in enumerate(tasks)))
    lines, start = [], 0
    for e, ep in enumerate(episodes):
        n = len(ep["action"])
        lines.append(json.dumps({"episode_index": e, "tasks": [tasks[ep["task"]]], "length": n}) + "\n")
        (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(_frames_table(ep, e, start, png_wrist), root / f"data/chunk-000/episode_{e:06d}.parquet")
        keep = n - (short or {}).get(e, 0)
        write_mp4(root / f"videos/chunk-000/{FRONT}/episode_{e:06d}.mp4", ep["front"][:keep], codec)
        start += n
    (root / "meta/episodes.jsonl").write_text("".join(lines))
    return root


def write_v30(root: Path, episodes: list[dict], tasks: list[str], codec: str = "libx264rgb",
              episodes_per_file: int = 2, short_last: int = 0) -> Path:
    """Several episodes per data file, one mp4 for all episodes (spans by from/to timestamp);
    tasks.parquet as pandas writes a frame with an unnamed index of task strings."""
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(_info("v3.0", episodes, len(tasks), False, codec)))
    tasks_table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "__index_level_0__": tasks})
    meta = {"index_columns": ["__index_level_0__"], "columns": [], "pandas_version": "2.2.3"}
    pq.write_table(tasks_table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()}),
                   root / "meta/tasks.parquet")
    rows, start, tables = [], 0, []
    for e, ep in enumerate(episodes):
        n, file = len(ep["action"]), e // episodes_per_file
        tables.append((file, _frames_table(ep, e, start, False)))
        rows.append({"episode_index": e, "tasks": [tasks[ep["task"]]], "length": n, "data/chunk_index": 0,
                     "data/file_index": file, "dataset_from_index": start, "dataset_to_index": start + n,
                     f"videos/{FRONT}/chunk_index": 0, f"videos/{FRONT}/file_index": 0,
                     f"videos/{FRONT}/from_timestamp": start / FPS, f"videos/{FRONT}/to_timestamp": (start + n) / FPS,
                     "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                     "stats/action/mean": ep["action"].mean(0).tolist()})
        start += n
    (root / "data/chunk-000").mkdir(parents=True)
    for file in sorted({f for f, _ in tables}):
        pq.write_table(pa.concat_tables([t for f, t in tables if f == file]),
                       root / f"data/chunk-000/file-{file:03d}.parquet")
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    frames = np.concatenate([ep["front"] for ep in episodes])
    write_mp4(root / f"videos/{FRONT}/chunk-000/file-000.mp4", frames[: len(frames) - short_last], codec)
    return root
