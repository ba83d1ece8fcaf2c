"""LeRobot datasets (v2.0/v2.1 and v3.0: parquet + mp4) as demo-store episodes.

Keys: `action` (or `actions`) -> action; `observation.state` -> state; `observation.images.<cam>`
-> <cam>_image (just <cam> when it already ends in "image"); any other `observation.<name>` -> <name>
with dots as underscores. `obs_map` renames on top (source: LeRobot feature name or the default store
name). Cameras stored as video are decoded from mp4 by time (data/convert/lerobot_video.py); cameras
stored as images in parquet are decoded from their PNG/JPEG bytes. Each LeRobot task string becomes a
task whose instruction is that string; an episode's task is the task of its first frame. A dataset
written by data/export_lerobot.py carries meta/mode_il.json and converts back to exactly its store.

The maintained reader (`lerobot-dataset`) is not used: its only release for Python 3.11 (0.4.4) pins
av<16 and huggingface-hub<0.36, which conflict with this project's av 18.1.0 and huggingface-hub
2.4.0. This reader needs only pyarrow and av.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.convert.common import check_positive, check_renames, pick, resize_frames
from data.convert.lerobot_meta import FRAME_COLUMNS, EpisodeRef, LeRobotMeta, parquet_columns, read_parquet
from data.convert.lerobot_video import decode_image_cells, decode_video
from data.convert.source import ConvertError, SourceEpisode, SourceTask

IMAGE_PREFIX = "observation.images."


@dataclass
class _Field:
    feature: str  # LeRobot feature (parquet column or video key)
    key: str  # store key
    kind: str  # "action" | "low_dim" | "image" (parquet cells) | "video"
    cols: slice | None = None  # the part of a flat feature this key takes (split observation.state)
    shape: tuple[int, ...] = ()  # per-step shape in the store


def default_key(feature: str) -> str:
    if feature.startswith(IMAGE_PREFIX) or feature == "observation.image":
        cam = feature.removeprefix(IMAGE_PREFIX).removeprefix("observation.").replace(".", "_")
        return cam if cam.endswith("image") else f"{cam}_image"
    return feature.removeprefix("observation.").replace(".", "_")


def camera_name(feature: str) -> str:
    return feature.removeprefix(IMAGE_PREFIX)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60] or "task"


def numeric_column(column: pa.ChunkedArray, n: int, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A parquet column of numbers or (nested, fixed or variable) lists of numbers as [n, *shape]."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if arr.null_count:
        raise ConvertError(f"{where}: {arr.null_count} empty cell(s)")
    while True:
        if isinstance(arr.type, pa.ExtensionType):  # e.g. Hugging Face Array2D
            arr = arr.storage
        elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
            arr = arr.flatten()
        else:
            break
    values = arr.to_numpy(zero_copy_only=False)
    per_row = int(np.prod(shape, dtype=np.int64))
    if values.size != n * per_row:
        raise ConvertError(f"{where}: {values.size} values in {n} rows; meta/info.json gives shape {list(shape)}")
    values = values.reshape(n, *shape)
    return values.astype(np.float32) if values.dtype.kind == "f" else values


class LeRobotReader:
    format = "lerobot"

    def __init__(self, path: str | Path, obs_keys: list[str] | None = None, cameras: list[str] | None = None,
                 obs_map: dict[str, str] | None = None, image_size: int | None = None,
                 max_episodes: int | None = None, filter: str | None = None, **_: Any) -> None:
        check_positive("max_episodes", max_episodes)
        check_positive("image_size", image_size)
        self.meta = LeRobotMeta(path)
        self.image_size = image_size
        self.warnings: list[str] = []
        self._fields = self._plan(obs_keys, cameras, dict(obs_map or {}))
        episodes = self.meta.episodes
        if filter is not None:
            keep = set(self.meta.split(filter))
            episodes = [e for e in episodes if e.index in keep]
        self._episodes = episodes[:max_episodes] if max_episodes else episodes
        self._tasks, self._task_of_lerobot = self._make_tasks()
        self._table: tuple[Path | None, pa.Table | None] = (None, None)

    # --- which features become which keys -------------------------------------------------
    def _plan(self, obs_keys, cameras, obs_map) -> list[_Field]:
        meta, where = self.meta, self.meta.info_where
        feats = meta.features
        action = "action" if "action" in feats else "actions" if "actions" in feats else None
        if action is None:
            raise ConvertError(f"{where}: no 'action' feature; features are {sorted(feats)}")
        side = meta.sidecar or {}
        key_map, layout = dict(side.get("key_map", {})), side.get("state_layout") or []
        fields = [_Field(action, "action", "action", shape=tuple(feats[action]["shape"]))]
        for name, ft in feats.items():
            dtype = ft.get("dtype")
            if name in (action, *FRAME_COLUMNS) or name.startswith("next.") or dtype in ("string", None):
                continue
            kind = {"video": "video", "image": "image"}.get(dtype, "low_dim")
            if name == "observation.state" and layout:  # our own export: split back into store keys
                start = 0
                for key, shape in layout:
                    width = int(np.prod(shape, dtype=np.int64))
                    fields.append(_Field(name, key, "low_dim", slice(start, start + width), tuple(shape)))
                    start += width
                continue
            fields.append(_Field(name, key_map.get(name, default_key(name)), kind, shape=tuple(ft.get("shape", ()))))
        # Renames: a source name is a LeRobot feature or the default store key.
        for src, dst in obs_map.items():
            hits = [f for f in fields if src in (f.feature, f.key) and f.kind != "action"]
            if not hits:
                raise ConvertError(f"{where}: obs_map renames {src!r}, which the dataset does not have; "
                                   f"keys: {sorted({f.feature for f in fields} | {f.key for f in fields})}")
            for f in hits:
                f.key = dst if len(hits) == 1 else f"{dst}_{f.key}"
        cams = [f for f in fields if f.kind in ("image", "video")]
        lows = [f for f in fields if f.kind == "low_dim"]
        if cameras is not None:
            names = {camera_name(f.feature): f for f in cams}
            aliases = {alias: camera_name(f.feature) for f in cams for alias in (f.feature, f.key)}
            wanted = pick(names, [aliases.get(c, c) for c in cameras], "camera", where)
            cams = [names[c] for c in wanted]
        if obs_keys is not None:
            by_name: dict[str, list[_Field]] = {}
            for f in lows:
                by_name.setdefault(f.key, []).append(f)
                by_name.setdefault(f.feature, []).append(f)
            chosen = pick(by_name, obs_keys, "low-dim observation", where)
            lows = [f for f in lows if any(f in by_name[c] for c in chosen)]
        fields = [fields[0], *lows, *cams]
        check_renames({f"{f.feature}[{f.cols}]" if f.cols else f.feature: f.key for f in fields}, where)
        return fields

    def _make_tasks(self) -> tuple[list[SourceTask], dict[int, int]]:
        side = self.meta.sidecar
        if side and side.get("tasks"):
            tasks = [SourceTask(t["name"], t.get("instruction", ""), t.get("env_spec") or None) for t in side["tasks"]]
            return tasks, {i: i for i in range(len(tasks))}
        order = sorted(self.meta.tasks)
        if not order:
            raise ConvertError(f"{self.meta.root}/meta: the dataset lists no tasks")
        names: dict[str, int] = {}
        tasks = []
        for i in order:
            text = self.meta.tasks[i]
            name = _slug(text)
            if name in names:
                name = f"{name}_{i}"
            names[name] = i
            tasks.append(SourceTask(name, text))
        return tasks, {lerobot: ours for ours, lerobot in enumerate(order)}

    # --- the reader interface -------------------------------------------------------------
    @property
    def tasks(self) -> list[SourceTask]:
        return self._tasks

    @property
    def action_space(self) -> dict[str, Any]:
        return dict((self.meta.sidecar or {}).get("action_space") or {})

    @property
    def attributes(self) -> dict[str, Any]:
        info = self.meta.info
        return {"source": str(self.meta.root), "lerobot_version": self.meta.version, "fps": self.meta.fps,
                "robot_type": info.get("robot_type"), "key_map": {f.feature: f.key for f in self._fields if not f.cols},
                "state_split": [[f.key, list(f.shape)] for f in self._fields if f.cols],
                "video_codecs": {f.feature: (self.meta.features[f.feature].get("info") or {}).get("video.codec")
                                 for f in self._fields if f.kind == "video"},
                "image_size": self.image_size, "from_mode_il_export": self.meta.sidecar is not None}

    def __len__(self) -> int:
        return len(self._episodes)

    def close(self) -> None:
        self._table = (None, None)

    def episodes(self, skip: int = 0) -> Iterator[SourceEpisode]:
        for ref in self._episodes[skip:]:
            yield self._episode(ref)

    # --- one episode ------------------------------------------------------------------------
    def _rows(self, ref: EpisodeRef) -> pa.Table:
        path, table = self._table
        if path != ref.data_path:  # v3.0 files hold many episodes: keep the current file's table
            present = parquet_columns(ref.data_path)
            wanted = {f.feature for f in self._fields if f.kind != "video"}
            missing = sorted(wanted - set(present))
            if missing:
                raise ConvertError(f"{ref.data_path}: no column(s) {missing} that meta/info.json lists")
            extra = {*FRAME_COLUMNS, "next.success"}
            table = read_parquet(ref.data_path, columns=[c for c in present if c in wanted | extra])
            self._table = (ref.data_path, table)
        if "episode_index" in table.column_names:
            table = table.filter(pc.equal(table["episode_index"], ref.index))
        if "frame_index" in table.column_names:
            table = table.sort_by("frame_index")
        if table.num_rows != ref.length:
            raise ConvertError(f"{ref.data_path}: episode {ref.index} has {table.num_rows} rows; its episode "
                               f"metadata says length {ref.length}")
        return table

    def _episode(self, ref: EpisodeRef) -> SourceEpisode:
        table = self._rows(ref)
        n = table.num_rows
        arrays: dict[str, np.ndarray] = {}
        flat: dict[str, np.ndarray] = {}
        for f in self._fields:
            where = f"{ref.data_path}:{f.feature}"
            if f.kind in ("action", "low_dim"):
                if f.feature not in flat:
                    shape = tuple(self.meta.features[f.feature].get("shape", ()))
                    flat[f.feature] = numeric_column(table[f.feature], n, shape, where)
                values = flat[f.feature]
                arrays[f.key] = values if f.cols is None else values.reshape(n, -1)[:, f.cols].reshape(n, *f.shape)
            elif f.kind == "image":
                arrays[f.key] = resize_frames(decode_image_cells(table[f.feature].to_pylist(), self.meta.root, where),
                                              self.image_size)
            else:
                video = ref.videos[f.feature]
                times = video.from_s + self._timestamps(table, n)
                frames = decode_video(video.path, times, self.meta.fps, f"key {f.feature}, episode {ref.index}")
                arrays[f.key] = resize_frames(frames, self.image_size)
        return SourceEpisode(arrays, self._task(table, ref), *self._seed_success(ref, table),
                             source=f"{ref.data_path}:episode {ref.index}",
                             metadata={"lerobot_episode_index": ref.index, "lerobot_tasks": ref.tasks})

    def _timestamps(self, table: pa.Table, n: int) -> np.ndarray:
        if "timestamp" in table.column_names:
            return table["timestamp"].to_numpy().astype(np.float64).reshape(n)
        return np.arange(n, dtype=np.float64) / self.meta.fps

    def _task(self, table: pa.Table, ref: EpisodeRef) -> int:
        where = f"{ref.data_path}: episode {ref.index}"
        if "task_index" in table.column_names and table.num_rows:
            first = int(table["task_index"][0].as_py())
        elif ref.tasks:
            by_text = {text: i for i, text in self.meta.tasks.items()}
            if ref.tasks[0] not in by_text:
                raise ConvertError(f"{where}: task {ref.tasks[0]!r} is not in the dataset's task list")
            first = by_text[ref.tasks[0]]
        else:
            return 0
        if first not in self._task_of_lerobot:
            raise ConvertError(f"{where}: task_index {first} is not in the dataset's task list")
        return self._task_of_lerobot[first]

    def _seed_success(self, ref: EpisodeRef, table: pa.Table) -> tuple[int, bool]:
        side = self.meta.sidecar or {}
        seeds, success = side.get("episode_seed") or [], side.get("episode_success") or []
        seed = int(seeds[ref.index]) if ref.index < len(seeds) else -1
        if ref.index < len(success):
            return seed, bool(success[ref.index])
        if "next.success" in table.column_names:
            return seed, bool(pc.any(table["next.success"]).as_py())
        return seed, True
