"""Demo store -> LeRobot v3.0 -> demo store: every array, task and flag comes back."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from data.convert.cli import convert
from data.export import main as export_main
from data.export_lerobot import ExportError, export_lerobot
from data.export_lerobot_stats import QUANTILE_KEYS, QUANTILES
from data.store import DemoStore
from envs.spec import EnvSpec
from tests.data.convert.lerobot_writers import smooth_frames


def _store(path, lengths=(6, 4, 5), size=16, smooth=False):
    rng = np.random.default_rng(0)
    lift = EnvSpec("robosuite", "Lift", cameras=["agentview"], image_size=size).to_dict()
    store = DemoStore.create(path, tasks=[{"name": "lift", "instruction": "lift the cube", "env_spec": lift},
                                          {"name": "stack", "instruction": "", "env_spec": {}}],
                             action_space={"low": -1, "high": 1})
    for i, n in enumerate(lengths):
        def frames(n=n):
            return smooth_frames(rng, n, size, size) if smooth else rng.integers(0, 256, (n, size, size, 3), np.uint8)

        store.append_episode({"action": rng.normal(size=(n, 7)).astype(np.float32),
                              "robot0_eef_pos": rng.normal(size=(n, 3)).astype(np.float32),
                              "object-state": rng.normal(size=(n, 2, 5)).astype(np.float32),
                              "phase": rng.integers(0, 4, size=(n, 1)).astype(np.int64),
                              "states": rng.normal(size=(n, 9)).astype(np.float32),
                              "agentview_image": frames(), "wrist_rgb": frames()},
                             task=i % 2, seed=40 + i, success=i != 1)
    return store


def _digest(path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() + p.read_bytes())
    return h.hexdigest()


def test_round_trip_reproduces_every_array_task_and_flag(tmp_path):
    src = _store(tmp_path / "s.zarr")
    before = _digest(tmp_path / "s.zarr")
    out = export_lerobot(tmp_path / "s.zarr", tmp_path / "lr")
    assert _digest(tmp_path / "s.zarr") == before  # the user's store is only read
    back = convert([str(out)], str(tmp_path / "back.zarr"), progress=False)
    assert back.keys == src.keys
    for key in src.keys:
        a, b = src.load([key])[key], back.load([key])[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        np.testing.assert_array_equal(a, b, err_msg=key)  # images too: libx264rgb at qp=0 is lossless
    np.testing.assert_array_equal(back.episode_ends, src.episode_ends)
    np.testing.assert_array_equal(back.episode_task, src.episode_task)
    np.testing.assert_array_equal(back.episode_seed, src.episode_seed)
    np.testing.assert_array_equal(back.episode_success, src.episode_success)
    assert back.tasks == src.tasks and back.action_space == src.action_space


def test_export_is_a_lerobot_v30_directory(tmp_path):
    src = _store(tmp_path / "s.zarr")
    out = export_lerobot(tmp_path / "s.zarr", tmp_path / "lr", fps=10)
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["total_frames"] == src.n_steps
    assert info["robot_type"] == "Panda" and info["total_tasks"] == 2
    feats = info["features"]
    assert feats["observation.state"]["shape"] == [13]  # object-state (2x5) then robot0_eef_pos (3)
    assert feats["observation.images.agentview"]["info"]["video.codec"] == "h264"
    assert {"observation.images.wrist_rgb", "observation.phase", "sim_states", "action", "task_index"} <= set(feats)
    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert tasks["task"].to_pylist() == ["lift the cube", "stack"] and tasks["task_index"].to_pylist() == [0, 1]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in eps] == [6, 4, 5] and eps[1]["tasks"] == ["stack"]
    assert [e["videos/observation.images.agentview/from_timestamp"] for e in eps] == [0.0, 0.6, 1.0]
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in eps] == [(0, 6), (6, 10), (10, 15)]
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert data["index"].to_pylist() == list(range(15)) and data["frame_index"].to_pylist()[6:10] == [0, 1, 2, 3]
    actions = np.stack(data["action"].to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(actions, src.load(["action"])["action"])
    stats = json.loads((out / "meta/stats.json").read_text())
    assert np.array(stats["observation.images.agentview"]["mean"]).shape == (3, 1, 1)

    # Without our sidecar it is read as any LeRobot dataset: one state vector, tasks named by their text.
    plain = tmp_path / "plain"
    shutil.copytree(out, plain)
    (plain / "meta/mode_il.json").unlink()
    store = convert([str(plain)], str(tmp_path / "plain.zarr"), progress=False)
    assert store.keys == ["action", "agentview_image", "phase", "sim_states", "state", "wrist_rgb_image"]
    assert [t["name"] for t in store.tasks] == ["lift_the_cube", "stack"]
    state = store.load(["state"])["state"]
    np.testing.assert_array_equal(state[:, 10:], src.load(["robot0_eef_pos"])["robot0_eef_pos"])


def test_lossy_av1_export_from_the_command_line_stays_within_a_stated_bound(tmp_path):
    src = _store(tmp_path / "s.zarr", lengths=(5, 4), size=64, smooth=True)
    out = tmp_path / "lr"
    assert export_main([str(tmp_path / "s.zarr"), f"out={out}", "format=lerobot", "video_codec=libsvtav1"]) == 0
    info = json.loads((out / "meta/info.json").read_text())["features"]["observation.images.agentview"]["info"]
    assert info["video.codec"] == "av1" and info["video.pix_fmt"] == "yuv420p"  # the codec, not its decoder
    back = convert([str(out)], str(tmp_path / "back.zarr"), progress=False)
    a, b = src.load(["agentview_image"])["agentview_image"], back.load(["agentview_image"])["agentview_image"]
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() < 8  # AV1 yuv420p: lossy
    np.testing.assert_array_equal(src.load(["action"])["action"], back.load(["action"])["action"])


def test_failures_leave_nothing_behind(tmp_path, monkeypatch):
    _store(tmp_path / "s.zarr")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ExportError, match="taken already exists; choose another output directory"):
        export_lerobot(tmp_path / "s.zarr", tmp_path / "taken")
    with pytest.raises(ExportError, match="video_codec must be one of"):
        export_lerobot(tmp_path / "s.zarr", tmp_path / "lr", video_codec="ffv1")

    from data.convert import lerobot_video

    def broken(self, frames):
        raise OSError("disk full")

    monkeypatch.setattr(lerobot_video.VideoWriter, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        export_lerobot(tmp_path / "s.zarr", tmp_path / "lr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr", "taken"]  # no partial directory


def _quantiles(x: np.ndarray) -> dict[str, np.ndarray]:
    return dict(zip(QUANTILE_KEYS, np.quantile(x.astype(np.float64), QUANTILES, axis=0)))


def test_stats_carry_lerobots_quantiles_per_episode_and_overall(tmp_path):
    src = _store(tmp_path / "s.zarr", lengths=(6, 4, 5))
    out = export_lerobot(tmp_path / "s.zarr", tmp_path / "lr")
    stats = json.loads((out / "meta/stats.json").read_text())
    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    action, frames = src.load(["action"])["action"], src.load(["agentview_image"])["agentview_image"]
    ends = src.episode_ends
    # Every feature LeRobot's writer describes, index columns included, has every stat, overall and per episode.
    wanted = {"min", "max", "mean", "std", "count", *QUANTILE_KEYS}
    feats = json.loads((out / "meta/info.json").read_text())["features"]
    assert set(stats) == set(feats) and all(set(s) == wanted for s in stats.values())
    assert all(f"stats/{f}/{k}" in eps[0] for f in feats for k in wanted)
    for key, want in _quantiles(action).items():
        np.testing.assert_allclose(stats["action"][key], want, err_msg=key)
    for e, row in enumerate(eps):
        rows = action[(ends[e - 1] if e else 0): ends[e]]
        for key, want in _quantiles(rows).items():
            np.testing.assert_allclose(row[f"stats/action/{key}"], want, err_msg=key)
        assert row["stats/action/count"] == [len(rows)]
        assert row["stats/episode_index/min"] == [e] and row["stats/episode_index/max"] == [e]
    # Camera stats per channel, shape (3, 1, 1), of pixels in [0, 1]; exact, whatever the frame order.
    pixels = frames.reshape(-1, 3) / 255.0
    for key, want in _quantiles(pixels).items():
        got = np.array(stats["observation.images.agentview"][key])
        assert got.shape == (3, 1, 1)
        np.testing.assert_allclose(got[:, 0, 0], want, atol=1e-12, err_msg=key)
    for key, want in (("mean", pixels.mean(0)), ("std", pixels.std(0)), ("min", pixels.min(0)), ("max", pixels.max(0))):
        np.testing.assert_allclose(np.array(stats["observation.images.agentview"][key])[:, 0, 0], want, atol=1e-12)
    first = frames[: ends[0]].reshape(-1, 3) / 255.0
    np.testing.assert_allclose(np.array(eps[0]["stats/observation.images.agentview/q99"])[:, 0, 0],
                               np.quantile(first, 0.99, axis=0), atol=1e-12)
    assert stats["observation.images.agentview"]["count"] == [src.n_steps]
    assert np.all(np.array(stats["observation.state"]["q01"]) <= np.array(stats["observation.state"]["q99"]))


def test_export_command_line_options(tmp_path, capsys):
    _store(tmp_path / "s.zarr")
    store = str(tmp_path / "s.zarr")
    assert export_main([store, f"out={tmp_path / 'a'}", "format=lerobot", "fps=10", "robot_type=UR5e",
                        "video_codec=libx264"]) == 0
    info = json.loads((tmp_path / "a/meta/info.json").read_text())
    assert info["fps"] == 10 and info["robot_type"] == "UR5e"
    assert info["features"]["observation.images.agentview"]["info"]["video.pix_fmt"] == "yuv420p"
    capsys.readouterr()
    assert export_main([store, f"out={tmp_path / 'b'}", "format=lerobot", "task=lift"]) == 1
    assert "format=lerobot takes the options video_codec, fps, robot_type, not ['task']" in capsys.readouterr().err
    assert export_main([store, f"out={tmp_path / 'b'}", "format=lerobot", "fps=ten"]) == 2
    assert "fps must be a positive integer, got 'ten'" in capsys.readouterr().err
    assert export_main([store, f"out={tmp_path / 'b'}", "format=lerobot", "video_codec=ffv1"]) == 1
    assert "video_codec must be one of" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
