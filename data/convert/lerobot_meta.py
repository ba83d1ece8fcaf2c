"""LeRobot dataset metadata, v2.0/v2.1 and v3.0: info.json, the tasks, and where each episode's frames are.

    v2.x  meta/info.json  meta/tasks.jsonl  meta/episodes.jsonl       one parquet and one mp4 per episode
          data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet   (info["data_path"])
          videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4
    v3.0  meta/info.json  meta/tasks.parquet  meta/episodes/chunk-*/file-*.parquet
          data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet      many episodes per file
          videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4   an episode is the span
          [videos/<key>/from_timestamp, to_timestamp) of its file

Our own exporter (data/export_lerobot.py) adds meta/mode_il.json with what LeRobot has no place for
(task names and env specs, seeds, success flags, how observation.state splits into store keys), so an
export converts back to the very same store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data.convert.source import ConvertError

SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")
SIDECAR = "meta/mode_il.json"
# Per-frame bookkeeping columns every LeRobot dataset has; they are not observations.
FRAME_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


@dataclass
class VideoRef:
    path: Path
    from_s: float = 0.0  # where the episode starts in the file (v3.0); 0 for one file per episode


@dataclass
class EpisodeRef:
    index: int  # LeRobot episode_index
    length: int
    tasks: list[str]
    data_path: Path
    videos: dict[str, VideoRef] = field(default_factory=dict)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConvertError(f"{path}: file missing; the LeRobot dataset is incomplete") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConvertError(f"{path}: not valid JSON ({err})") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ConvertError(f"{path}: file missing; the LeRobot dataset is incomplete") from None
    out = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ConvertError(f"{path}:{n}: not valid JSON ({err})") from None
    return out


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    if not path.is_file():
        raise ConvertError(f"{path}: file missing; the LeRobot dataset is incomplete")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise ConvertError(f"{path}: not a readable parquet file ({err})") from None


def parquet_columns(path: Path) -> list[str]:
    if not path.is_file():
        raise ConvertError(f"{path}: file missing; the LeRobot dataset is incomplete")
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as err:
        raise ConvertError(f"{path}: not a readable parquet file ({err})") from None


def _require(row: dict[str, Any], keys: list[str], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise ConvertError(f"{where}: no {missing} (a LeRobot {where.rsplit('/', 1)[-1]} needs them)")


def _fill(template: str, where: str, **values: Any) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as err:
        raise ConvertError(f"{where}: path template {template!r} cannot be filled ({err})") from None


class LeRobotMeta:
    """Everything about a LeRobot dataset directory except the frames themselves."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise ConvertError(f"{self.root}: not a LeRobot dataset (no meta/info.json)")
        self.info_where = str(info_path)
        self.info: dict[str, Any] = read_json(info_path)
        _require(self.info, ["codebase_version", "features", "fps"], self.info_where)
        self.version = str(self.info["codebase_version"])
        if self.version not in SUPPORTED_VERSIONS:
            raise ConvertError(f"{info_path}: codebase_version {self.version!r} is not supported; this reader "
                               f"reads {', '.join(SUPPORTED_VERSIONS)} (convert older datasets with LeRobot first)")
        self.fps = float(self.info["fps"])
        self.features: dict[str, dict[str, Any]] = dict(self.info["features"])
        self.video_keys = [k for k, f in self.features.items() if f.get("dtype") == "video"]
        sidecar = self.root / SIDECAR
        self.sidecar: dict[str, Any] | None = read_json(sidecar) if sidecar.is_file() else None
        if self.version == "v3.0":
            self.tasks = self._tasks_v3()
            self.episodes = self._episodes_v3()
        else:
            self.tasks = self._tasks_v2()
            self.episodes = self._episodes_v2()
        self.episodes.sort(key=lambda e: e.index)

    # --- tasks: {task_index: task string} ---------------------------------------------------
    def _tasks_v2(self) -> dict[int, str]:
        path = self.root / "meta" / "tasks.jsonl"
        rows = read_jsonl(path)
        for n, row in enumerate(rows, 1):
            _require(row, ["task_index", "task"], f"{path}:{n}")
        return {int(r["task_index"]): str(r["task"]) for r in rows}

    def _tasks_v3(self) -> dict[int, str]:
        path = self.root / "meta" / "tasks.parquet"
        table = read_parquet(path)
        if "task_index" not in table.column_names:
            raise ConvertError(f"{path}: no column 'task_index'")
        # LeRobot writes a pandas frame indexed by the task string: the column is "task" or the index.
        meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}") or b"{}")
        candidates = ["task", *[c for c in meta.get("index_columns", []) if isinstance(c, str)]]
        candidates += [n for n in table.column_names if pa.types.is_string(table.schema.field(n).type)]
        name = next((c for c in candidates if c in table.column_names and c != "task_index"), None)
        if name is None:
            raise ConvertError(f"{path}: no column of task strings next to 'task_index'")
        return dict(zip(table["task_index"].to_pylist(), table[name].to_pylist()))

    # --- episodes ---------------------------------------------------------------------------
    def _template(self, key: str) -> str:
        if not self.info.get(key):
            raise ConvertError(f"{self.info_where}: no {key!r} path template")
        return str(self.info[key])

    def _episodes_v2(self) -> list[EpisodeRef]:
        path = self.root / "meta" / "episodes.jsonl"
        chunks_size = int(self.info.get("chunks_size", 1000))
        data_t = self._template("data_path")
        video_t = self._template("video_path") if self.video_keys else ""
        out = []
        for n, row in enumerate(read_jsonl(path), 1):
            _require(row, ["episode_index", "length"], f"{path}:{n}")
            ep = int(row["episode_index"])
            where = f"{path}:{n}"
            values = {"episode_chunk": ep // chunks_size, "episode_index": ep}
            videos = {k: VideoRef(self.root / _fill(video_t, where, video_key=k, **values)) for k in self.video_keys}
            out.append(EpisodeRef(ep, int(row["length"]), [str(t) for t in row.get("tasks", [])],
                                  self.root / _fill(data_t, where, **values), videos))
        return out

    def _episodes_v3(self) -> list[EpisodeRef]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise ConvertError(f"{self.root / 'meta' / 'episodes'}: no chunk-*/file-*.parquet episode files")
        data_t = self._template("data_path")
        video_t = self._template("video_path") if self.video_keys else ""
        needed = ["episode_index", "length", "data/chunk_index", "data/file_index"]
        for k in self.video_keys:
            needed += [f"videos/{k}/chunk_index", f"videos/{k}/file_index", f"videos/{k}/from_timestamp"]
        out = []
        for path in files:
            names = parquet_columns(path)
            missing = [c for c in needed if c not in names]
            if missing:
                raise ConvertError(f"{path}: no column(s) {missing}")
            table = read_parquet(path, [*needed, *(["tasks"] if "tasks" in names else [])])
            for row in table.to_pylist():
                where = f"{path} (episode {row['episode_index']})"
                data = _fill(data_t, where, chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
                videos = {}
                for k in self.video_keys:
                    file = _fill(video_t, where, video_key=k, chunk_index=row[f"videos/{k}/chunk_index"],
                                 file_index=row[f"videos/{k}/file_index"])
                    videos[k] = VideoRef(self.root / file, float(row[f"videos/{k}/from_timestamp"]))
                out.append(EpisodeRef(int(row["episode_index"]), int(row["length"]),
                                      [str(t) for t in row.get("tasks") or []], self.root / data, videos))
        return out

    def split(self, name: str) -> range:
        """Episode indices of a named split of info.json ("train": "0:50")."""
        splits = self.info.get("splits") or {}
        if name not in splits:
            raise ConvertError(f"{self.info_where}: no split {name!r}; it has {sorted(splits) or 'none'}")
        try:
            lo, hi = (int(x) for x in str(splits[name]).split(":"))
        except ValueError:
            raise ConvertError(f"{self.info_where}: split {name!r} is {splits[name]!r}, not 'start:end'") from None
        return range(lo, hi)
