"""Broken stores (issue #14): each is built in tmp_path through the public API and then damaged behind it;
open / check / inspect must say what is wrong in one exact line and write nothing (directory hash)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import data.store as store_module
from data import inspect
from data.store import DemoStore, StoreError
from envs.spec import EnvSpec
from tests.conftest import synthetic_episode

REWRITE = "regenerate the store (python -m data.generate) or re-convert it from its source"
LENGTHS = [10, 14, 12, 9]  # 45 rows: with 16-row chunks data/action spans chunks 0..2


def tree_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(path).rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


@pytest.fixture
def store_path(tmp_path, monkeypatch):
    """A sound 2-task, 4-episode store with a camera key, small chunks so episodes straddle them."""
    monkeypatch.setattr(store_module, "LOWDIM_ROWS_PER_CHUNK", 16)
    rng = np.random.default_rng(0)
    tasks = [{"name": f"t{i}", "instruction": f"do {i}", "env_spec": {}} for i in range(2)]
    store = DemoStore.create(tmp_path / "s.zarr", tasks=tasks)
    for i, n in enumerate(LENGTHS):
        store.append_episode(synthetic_episode(rng, n, image=True), task=i % 2, seed=i)
    assert store.check(deep=True) == []
    return str(tmp_path / "s.zarr")


def open_error(path: str) -> str:
    """The one-line error of opening, asserting the store's bytes did not change."""
    before = tree_hash(path)
    with pytest.raises(StoreError) as err:
        DemoStore.open(path)
    assert tree_hash(path) == before
    assert "\n" not in str(err.value)
    return str(err.value)


def deep_problems(path: str) -> list[str]:
    before = tree_hash(path)
    problems = DemoStore.open(path).check(deep=True)
    assert tree_hash(path) == before
    return problems


def inspect_errors(path: str, capsys, check: bool = True) -> tuple[int, list[str], str]:
    before = tree_hash(path)
    rc = inspect.main([path, "--check"] if check else [path])
    out = capsys.readouterr()
    assert tree_hash(path) == before
    return rc, [line.removeprefix("error: ") for line in out.err.splitlines()], out.out


def edit(path: str, name: str) -> zarr.Array:
    return zarr.open_array(os.path.join(path, name), mode="r+")


def test_deleted_chunk_of_action_is_refused_on_open_not_read_as_zeros(store_path, capsys):
    os.remove(Path(store_path, "data/action/c/1/0"))
    line = (f"store {store_path!r}: chunk data/action/c/1/0 is missing, so zarr would read its fill value "
            f"(rows 16-31, episodes 1-2): {REWRITE}, or drop episodes 1-2")
    assert open_error(store_path) == line
    assert inspect_errors(store_path, capsys)[:2] == (1, [line])


def test_deleted_image_chunk_is_found_by_the_deep_check(store_path, capsys):
    os.remove(Path(store_path, "data/agentview_image/c/3/0/0/0"))  # frames 12-15, all in episode 1
    line = (f"store {store_path!r}: chunk data/agentview_image/c/3/0/0/0 is missing, so zarr would read its fill "
            f"value (rows 12-15, episode 1): {REWRITE}, or drop episode 1")
    assert deep_problems(store_path) == [line]
    assert inspect_errors(store_path, capsys)[:2] == (1, [line])


def test_non_monotonic_episode_ends(store_path, capsys):
    edit(store_path, "meta/episode_ends")[2] = 20  # after 24: a negative length
    line = (f"store {store_path!r}: meta/episode_ends is not strictly increasing at episode 2 (ends at row 20, "
            f"after 24): the store is corrupt; {REWRITE}")
    assert open_error(store_path) == line
    assert inspect_errors(store_path, capsys)[:2] == (1, [line])


def test_last_end_past_the_data(store_path):
    edit(store_path, "meta/episode_ends")[3] = 60
    assert open_error(store_path) == (
        f"store {store_path!r}: meta/episode_ends says episode 3 ends at row 60, past the 45 rows of data/action "
        f"(and 3 other key(s)): the store is corrupt; {REWRITE}, or drop episode 3")


def test_corrupted_chunk_is_one_line_not_a_codec_traceback(store_path, capsys):
    Path(store_path, "data/action/c/0/0").write_bytes(b"garbage" * 30)  # not a blosc frame
    store = DemoStore.open(store_path)  # the cheap checks read no data chunks
    with pytest.raises(StoreError) as err:
        store.load(["action"])
    assert str(err.value) == (
        f"store {store_path!r}: data/action rows 0-15 (episodes 0-1) cannot be read (RuntimeError: error during blosc "
        f"decompression: -1); `python -m data.inspect {store_path} --check` names the damaged chunk and what to do")
    line = (f"store {store_path!r}: chunk data/action/c/0/0 cannot be decoded (RuntimeError: error during blosc "
            f"decompression: -1): the file is corrupt (rows 0-15, episodes 0-1): {REWRITE}, or drop episodes 0-1")
    assert deep_problems(store_path) == [line]
    assert inspect_errors(store_path, capsys)[:2] == (1, [line])


def test_episode_task_outside_the_task_list(store_path, capsys):
    edit(store_path, "meta/episode_task")[1] = 5
    line = (f"store {store_path!r}: meta/episode_task of episode 1 is 5, but the store has 2 task(s): {REWRITE}, "
            "or drop episode 1")
    assert open_error(store_path) == line
    assert inspect_errors(store_path, capsys, check=False)[:2] == (1, [line])


def test_deleted_episode_ends_is_an_error_not_an_empty_store(store_path, capsys):
    copy = store_path + ".copy"
    shutil.copytree(store_path, copy)
    os.remove(Path(store_path, "meta/episode_ends/c/0"))  # the chunk: zarr would read 4 zero ends
    line = f"store {store_path!r}: chunk meta/episode_ends/c/0 is missing: the store is corrupt; {REWRITE}"
    assert open_error(store_path) == line
    assert inspect_errors(store_path, capsys, check=False)[:2] == (1, [line])
    shutil.rmtree(Path(copy, "meta/episode_ends"))  # the whole array
    line = f"store {copy!r}: meta/episode_ends is missing: the store is corrupt; {REWRITE}"
    assert open_error(copy) == line
    assert inspect_errors(copy, capsys)[:2] == (1, [line])


@pytest.mark.parametrize("key,value", [("action", np.nan), ("action", np.inf), ("object", np.nan)])
def test_non_finite_values_written_behind_the_api(store_path, capsys, key, value):
    edit(store_path, f"data/{key}")[30, 2] = value  # row 30: episode 2 (rows 24-35)
    line = (f"store {store_path!r}: data/{key} holds NaN or inf in episode 2 (row 30); drop episode 2 or "
            f"{REWRITE}")
    assert deep_problems(store_path) == [line]
    rc, errors, out = inspect_errors(store_path, capsys)
    printed = ("+nan", "-nan", "+inf", "-inf")  # how a statistic over non-finite values would print
    assert (rc, errors) == (1, [line]) and not any(s in out for s in printed)
    if key == "action":  # without --check the statistics say why they are missing instead of printing nan
        rc, errors, out = inspect_errors(store_path, capsys, check=False)
        assert rc == 1 and not any(s in out for s in printed)
        assert "action statistics  not computed: the actions hold NaN or inf" in out
        assert errors == [f"store {store_path!r}: data/action holds NaN or inf in 1 row(s) of episode(s) 2; "
                          f"`python -m data.inspect {store_path} --check` says what to do"]


def test_finite_change_behind_the_api_fails_its_checksum(store_path):
    edit(store_path, "data/robot0_eef_pos")[3, 0] = 0.25
    edit(store_path, "data/agentview_image")[40] = 0
    assert deep_problems(store_path) == [
        f"store {store_path!r}: data/agentview_image of episode 3 differs from the checksum recorded when it was "
        f"written (its files changed since); {REWRITE}, or drop episode 3",
        f"store {store_path!r}: data/robot0_eef_pos of episode 0 differs from the checksum recorded when it was "
        f"written (its files changed since); {REWRITE}, or drop episode 0",
    ]


def test_camera_frames_must_match_the_env_spec(tmp_path):
    spec = EnvSpec(simulator="robosuite", task="Lift", cameras=["agentview"], image_size=84).to_dict()
    tasks = [{"name": "lift", "instruction": "lift", "env_spec": spec}]
    path = str(tmp_path / "cam.zarr")
    episode = synthetic_episode(np.random.default_rng(0), 3, image=True)  # 16x16 frames
    store = DemoStore.create(path, tasks=tasks)
    with pytest.raises(StoreError) as err:
        store.append_episode(episode)
    assert str(err.value) == ("task 0 ('lift') observes camera 'agentview' at 84x84 in its env_spec but the "
                              "episode's agentview_image holds (16, 16, 3) uint8 frames; record frames of that size "
                              "or fix the env_spec")
    assert DemoStore.open(path).n_episodes == 0
    # The same frames under a spec edited in behind the API: the open says so before anyone trains on them.
    free = DemoStore.create(tmp_path / "free.zarr", tasks=[{**tasks[0], "env_spec": {}}])
    free.append_episode(episode)
    zarr.open_group(free.path, mode="r+").attrs["tasks"] = tasks
    assert open_error(free.path) == (
        f"store {free.path!r}: task 0 ('lift') observes camera 'agentview' at 84x84 in its env_spec but the data's "
        f"agentview_image holds (16, 16, 3) uint8 frames; {REWRITE} with matching cameras and image_size")


def test_inspect_of_a_sound_store_passes(store_path, capsys):
    rc, errors, out = inspect_errors(store_path, capsys)
    assert (rc, errors) == (0, [])
    assert "check      passed: every chunk present and decodable, floats finite, checksums match" in out


def test_append_rejects_non_finite_observations_naming_the_key(store_path):
    store = DemoStore.open(store_path, "a")
    before = tree_hash(store_path)
    episode = synthetic_episode(np.random.default_rng(1), 5, image=True)
    episode["object"][3, 1] = np.inf
    with pytest.raises(StoreError) as err:
        store.append_episode(episode)
    assert str(err.value) == "episode key 'object' holds NaN or inf (step 3); fix the demonstrator or drop the episode"
    assert tree_hash(store_path) == before


def test_create_validates_env_specs_and_writes_nothing(tmp_path):
    path = tmp_path / "new.zarr"
    typo = {"simulator": "robosuite", "task": "Lift", "image_sise": 84}
    with pytest.raises(StoreError) as err:
        DemoStore.create(path, tasks=[{"name": "lift", "instruction": "lift", "env_spec": typo}])
    known = sorted(f.name for f in dataclasses.fields(EnvSpec))
    assert str(err.value) == (f"task 0 ('lift'): invalid env_spec: unknown env spec fields ['image_sise']; known: "
                              f"{known}; the fields are those of envs.spec.EnvSpec (docs/store.md: write a store "
                              "from your own code)")
    with pytest.raises(StoreError) as err:
        DemoStore.create(path, tasks=[{"name": "x", "instruction": "", "env_spec": {"simulator": "metaworld"}}])
    assert str(err.value) == ("task 0 ('x'): invalid env_spec: it lacks ['task'] (required: simulator, task); the "
                              "fields are those of envs.spec.EnvSpec (docs/store.md: write a store from your own "
                              "code)")
    assert not path.exists()
    # A partial spec is completed with EnvSpec's defaults, so the store alone rebuilds the same simulator.
    store = DemoStore.create(path, tasks=[{"name": "r", "instruction": "", "env_spec": {"simulator": "metaworld",
                                                                                       "task": "reach-v3"}}])
    assert store.tasks[0]["env_spec"] == EnvSpec(simulator="metaworld", task="reach-v3").to_dict()
    assert store.origin == {"kind": "user"} and not store.generated_by_framework


def test_generate_refuses_to_top_up_a_store_it_did_not_make(store_path):
    from data.generate import generate

    before = tree_hash(store_path)
    with pytest.raises(StoreError) as err:
        generate("lift", 10, store_path, workers=0, horizon=4, keep_failed=True, progress=False)
    assert str(err.value) == (f"{store_path!r} holds a store data.generate did not make (origin: user); it only "
                              "tops up stores it generated itself and never writes into others: choose another "
                              "out=PATH")
    assert tree_hash(store_path) == before


def test_generated_store_records_its_origin_and_can_be_topped_up(tmp_path):
    from data.generate import generate

    out = str(tmp_path / "g.zarr")
    store = generate("lift", 1, out, workers=0, horizon=3, keep_failed=True, progress=False)
    assert store.generated_by_framework and store.origin["task"] == "lift" and store.origin["images"] is False
    assert generate("lift", 2, out, workers=0, horizon=3, keep_failed=True, progress=False).n_episodes == 2


def test_crash_between_resizing_and_writing_episode_ends_leaves_a_sound_store(store_path):
    edit(store_path, "meta/episode_ends").resize((5,))  # the commit's first half: one row of fill value 0
    assert DemoStore.open(store_path).n_episodes == 4
    store = DemoStore.open(store_path, "a")  # trims the row, then appends normally
    store.append_episode(synthetic_episode(np.random.default_rng(2), 4, image=True))
    assert DemoStore.open(store_path).check(deep=True) == [] and store.n_episodes == 5


def test_format_1_store_is_read_but_not_appended_to(store_path):
    shutil.rmtree(Path(store_path, "meta/episode_checksum"))
    zarr.open_group(store_path, mode="r+").attrs["format_version"] = 1
    assert DemoStore.open(store_path).check(deep=True) == []  # decodes and finite; no checksums to compare
    before = tree_hash(store_path)
    with pytest.raises(StoreError) as err:
        DemoStore.open(store_path, "a")
    assert str(err.value) == (f"store {store_path!r} has format version 1 (written before per-episode checksums): "
                              "it can be read and trained on but not appended to; write a new store "
                              "(python -m data.generate, or convert)")
    assert tree_hash(store_path) == before


def test_every_problem_is_listed_and_open_names_the_first(store_path, capsys):
    group = zarr.open_group(store_path, mode="r+")
    group.attrs["tasks"] = [{"name": "t0", "instruction": "", "env_spec": {"simulator": "gazebo", "task": "x"}},
                            {"name": "t1", "instruction": "", "env_spec": {}}]
    edit(store_path, "meta/episode_task")[2] = -1
    spec_line = (f"store {store_path!r}: task 0 ('t0') has an invalid env_spec (unknown simulator 'gazebo'; known: "
                 f"robosuite, metaworld, libero); fix the store's tasks attribute or {REWRITE}")
    task_line = (f"store {store_path!r}: meta/episode_task of episode 2 is -1, but the store has 2 task(s): "
                 f"{REWRITE}, or drop episode 2")
    assert open_error(store_path) == spec_line + " (and 1 more problem(s); data.inspect --check lists them)"
    assert inspect_errors(store_path, capsys, check=False)[:2] == (1, [spec_line, task_line])
