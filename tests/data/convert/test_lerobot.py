"""LeRobot v2.1 / v3.0 directories -> demo store: arrays, tasks, options, bad input."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from data.convert.cli import convert
from data.convert.common import resize_frames
from data.convert.lerobot import LeRobotReader
from data.convert.source import ConvertError
from data.dataset import DemoDataset
from data.inspect import describe
from data.store import DemoStore
from tests.data.convert.lerobot_writers import make_episodes, smooth_frames, write_v21, write_v30

TASKS = ["pick up the red block", "open the drawer"]


def _check_store(store: DemoStore, episodes: list[dict], wrist: bool) -> None:
    assert store.episode_lengths.tolist() == [len(e["action"]) for e in episodes]
    expected = {"action": "action", "state": "state", "front_image": "front"}
    expected |= {"wrist_image": "wrist"} if wrist else {}
    assert store.keys == sorted(expected)
    for key, src in expected.items():
        for i, ep in enumerate(episodes):
            np.testing.assert_array_equal(store.get_episode(i, [key])[key], ep[src], err_msg=f"{key} of episode {i}")
    assert store.episode_task.tolist() == [ep["task"] for ep in episodes]
    assert [(t["name"], t["instruction"]) for t in store.tasks] == [
        ("pick_up_the_red_block", TASKS[0]), ("open_the_drawer", TASKS[1])]


def test_v21_video_and_png_cameras_convert_array_for_array(tmp_path):
    episodes = make_episodes([6, 4, 5])
    src = write_v21(tmp_path / "lr21", episodes, TASKS)
    store = convert([str(src)], str(tmp_path / "s.zarr"), progress=False)
    _check_store(store, episodes, wrist=True)
    assert store.attrs["source"]["lerobot_version"] == "v2.1"
    text = describe(store.path)
    assert "episodes   3   steps 15" in text and f'1 episodes  (no simulator)  "{TASKS[1]}"' in text
    # The converted store trains: a batch of windows comes out of the dataset.
    batch = DemoDataset(store, ["state", "front_image"], 2, 4, 2).__getitems__([0, 3, 7])
    assert batch["obs"]["front_image"].shape == (3, 2, 16, 16, 3) and batch["action"].shape == (3, 4, 3)


def test_v30_many_episodes_per_file_and_one_shared_mp4(tmp_path):
    episodes = make_episodes([5, 7, 3, 4])
    src = write_v30(tmp_path / "lr30", episodes, TASKS, episodes_per_file=3)
    store = convert([str(src)], str(tmp_path / "s.zarr"), progress=False)
    _check_store(store, episodes, wrist=False)
    assert store.attrs["source"]["lerobot_version"] == "v3.0"


def test_options_select_rename_resize_cap_and_split(tmp_path):
    episodes = make_episodes([6, 4, 5])
    src = write_v21(tmp_path / "lr", episodes, TASKS)
    reader = LeRobotReader(src, cameras=["front"], obs_keys=["observation.state"], image_size=8, max_episodes=2,
                           obs_map={"observation.images.front": "agentview_image"})
    got = list(reader.episodes())
    assert len(reader) == len(got) == 2 and sorted(got[0].arrays) == ["action", "agentview_image", "state"]
    np.testing.assert_array_equal(got[1].arrays["agentview_image"], resize_frames(episodes[1]["front"], 8))
    assert [e.metadata["lerobot_episode_index"] for e in LeRobotReader(src, filter="val").episodes()] == [2]
    assert len(list(LeRobotReader(src).episodes(skip=2))) == 1
    with pytest.raises(ConvertError, match=r"info\.json has no camera \['top'\]; it has \['front', 'wrist'\]"):
        LeRobotReader(src, cameras=["top"])
    with pytest.raises(ConvertError, match="obs_map renames 'nope'"):
        LeRobotReader(src, obs_map={"nope": "x"})
    with pytest.raises(ConvertError, match="would both become 'state'"):
        LeRobotReader(src, obs_map={"front_image": "state"})


def test_short_mp4_is_one_clear_error_and_no_half_written_episode(tmp_path):
    episodes = make_episodes([5, 6, 4])
    src = write_v21(tmp_path / "lr", episodes, TASKS, short={1: 2})
    with pytest.raises(ConvertError) as err:
        convert([str(src)], str(tmp_path / "s.zarr"), progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "episode_000001.mp4" in msg and "observation.images.front" in msg
    assert "video has 4 of the 6 frames" in msg
    store = DemoStore.open(tmp_path / "s.zarr")  # what was written before the bad episode stays whole
    assert store.n_episodes == 1 and all(store.array(k).shape[0] == 5 for k in store.keys)
    assert store.check(deep=True) == []

    src30 = write_v30(tmp_path / "lr30", episodes, TASKS, short_last=1)
    with pytest.raises(ConvertError, match=r"file-000\.mp4: video has 3 of the 4 frames .*key observation"):
        list(LeRobotReader(src30).episodes())


def test_av1_video_decodes_within_a_stated_bound(tmp_path):
    if "libsvtav1" not in av.codecs_available:
        pytest.skip("this PyAV build has no AV1 encoder to write the test video")
    rng = np.random.default_rng(0)
    episodes = make_episodes([5, 4], h=64, w=64)
    for ep in episodes:
        ep["front"] = smooth_frames(rng, len(ep["action"]), 64, 64)
    src = write_v30(tmp_path / "lr", episodes, TASKS, codec="libsvtav1")
    got = np.concatenate([e.arrays["front_image"] for e in LeRobotReader(src).episodes()]).astype(int)
    want = np.concatenate([e["front"] for e in episodes]).astype(int)
    assert got.shape == want.shape == (9, 64, 64, 3)
    assert np.abs(got - want).mean() < 8  # lossy AV1 (yuv420p halves the colour resolution): close, not exact
    # Every decoded frame is nearest to its own source frame: decoding by time picked the right ones.
    dist = np.abs(got[:, None] - want[None]).mean(axis=(2, 3, 4))
    assert dist.argmin(axis=1).tolist() == list(range(9))


def test_bad_input_names_file_and_key(tmp_path):
    with pytest.raises(ConvertError, match="not a LeRobot dataset"):
        LeRobotReader(tmp_path)
    src = write_v21(tmp_path / "lr", make_episodes([4, 3]), TASKS)
    info = json.loads((src / "meta/info.json").read_text())
    (src / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(ConvertError, match=r"info\.json: codebase_version 'v1\.6' is not supported"):
        LeRobotReader(src)
    (src / "meta/info.json").write_text(json.dumps(info))
    (src / "data/chunk-000/episode_000001.parquet").unlink()
    with pytest.raises(ConvertError, match=r"episode_000001\.parquet: file missing"):
        list(LeRobotReader(src).episodes())
    (src / "videos/chunk-000/observation.images.front/episode_000000.mp4").unlink()
    with pytest.raises(ConvertError, match=r"episode_000000\.mp4: video file missing \(key observation\.images"):
        list(LeRobotReader(src).episodes())
    no_action = {**info, "features": {k: v for k, v in info["features"].items() if k != "action"}}
    (src / "meta/info.json").write_text(json.dumps(no_action))
    with pytest.raises(ConvertError, match=r"info\.json: no 'action' feature"):
        LeRobotReader(src)
