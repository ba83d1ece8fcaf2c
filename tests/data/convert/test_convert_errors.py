"""Bad input: one clear line naming the file and key, and never a half-written episode in the output."""

from __future__ import annotations

import hashlib
import json
import os

import h5py
import numpy as np
import pytest

from data.convert.cli import convert, main
from data.convert.source import ConvertError
from data.store import DemoStore
from tests.data.convert.writers import LIFT_ENV_ARGS, robomimic_demo, robomimic_lift_file, write_demos


def _fails(capsys, argv, *fragments):
    """main() exits 1 with one 'error: ...' line holding every fragment."""
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_not_hdf5_missing_files_and_bad_arguments(tmp_path, capsys):
    out = tmp_path / "s.zarr"
    text = tmp_path / "notes.hdf5"
    text.write_text("not a dataset")
    _fails(capsys, [str(text), f"out={out}"], str(text), "is not an HDF5 file")
    _fails(capsys, [str(tmp_path / "nowhere.hdf5"), f"out={out}"], "nowhere.hdf5: no such file")
    src = robomimic_lift_file(tmp_path / "a.hdf5")
    _fails(capsys, [str(src), f"out={out}", "camras=agentview"], "unknown argument 'camras'")
    _fails(capsys, [str(src), f"out={out}", "max_episodes=few"], "max_episodes must be a non-negative integer")
    _fails(capsys, [str(src), f"out={out}", "filter=50_percent"], "a.hdf5 has no mask/50_percent",
           "['train', 'valid']")
    _fails(capsys, [str(src), str(src), f"out={out}"], "a file is named twice")
    other = robomimic_lift_file(tmp_path / "b.hdf5")
    _fails(capsys, [str(src), str(other), f"out={out}"], "only as a LIBERO suite")
    _fails(capsys, [str(src), f"out={src}"], "is the source itself")
    assert not out.exists()


def test_missing_env_args_unknown_env_and_missing_keys(tmp_path, capsys):
    out = tmp_path / "s.zarr"
    rng = np.random.default_rng(0)
    bare = write_demos(tmp_path / "bare.hdf5", [robomimic_demo(rng, 4)], {})
    _fails(capsys, [str(bare), f"out={out}"], "bare.hdf5: data.attrs['env_args'] is missing")
    raw = write_demos(tmp_path / "raw.hdf5", [{"actions": np.zeros((3, 7)), "states": np.zeros((3, 32))}],
                      {"env": "Foo", "repository_version": "1.4.1"})
    _fails(capsys, [str(raw), f"out={out}"], "raw.hdf5: data.attrs names env 'Foo' is not one we simulate",
           "needs that simulator")
    src = robomimic_lift_file(tmp_path / "a.hdf5")
    _fails(capsys, [str(src), f"out={out}", "cameras=agentview,frontview"],
           "a.hdf5:data/demo_0/obs has no camera ['frontview']", "['agentview']")
    _fails(capsys, [str(src), f"out={out}", "obs_keys=robot0_eef_pos,cube_pos"], "has no observation key ['cube_pos']")
    _fails(capsys, [str(src), f"out={out}", "obs_map=robot0_eef_pos:object-state"],
           "keys 'object' and 'robot0_eef_pos' would both become 'object-state'")
    assert not out.exists()


def test_truncated_file_and_mismatched_lengths_fail_before_writing(tmp_path, capsys):
    out = tmp_path / "s.zarr"
    src = robomimic_lift_file(tmp_path / "a.hdf5")
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(src.read_bytes()[: os.path.getsize(src) // 2])
    _fails(capsys, [str(cut), f"out={out}"], "cut.hdf5 could not be opened as HDF5", "truncated or corrupt")
    rng = np.random.default_rng(0)
    demos = [robomimic_demo(rng, 4) for _ in range(3)]
    demos[2]["obs"]["robot0_eef_pos"] = demos[2]["obs"]["robot0_eef_pos"][:3]
    ragged = write_demos(tmp_path / "ragged.hdf5", demos, {"env_args": json.dumps(LIFT_ENV_ARGS)})
    _fails(capsys, [str(ragged), f"out={out}"],
           "ragged.hdf5:data/demo_2/obs/robot0_eef_pos has 3 steps but", "data/demo_2/actions has 4")
    assert not out.exists()  # checked before the first episode was written


def test_damage_found_mid_file_keeps_only_whole_episodes(tmp_path):
    src = robomimic_lift_file(tmp_path / "a.hdf5")
    damaged = tmp_path / "damaged.hdf5"
    with h5py.File(src, "r") as f, h5py.File(damaged, "w") as g:
        f.copy("data", g)
        del g["data/demo_2/actions"]
        g.create_dataset("data/demo_2/actions", data=f["data/demo_2/actions"][()], compression="gzip", chunks=True)
        offset = g["data/demo_2/actions"].id.get_chunk_info(0).byte_offset
    with open(damaged, "r+b") as fh:  # scramble the compressed chunk: opening works, reading it fails
        fh.seek(offset)
        fh.write(b"\xff" * 64)
    out = str(tmp_path / "s.zarr")
    with pytest.raises(ConvertError, match=r"damaged.hdf5:data/demo_2/actions could not be read .* corrupt"):
        convert([str(damaged)], out, progress=False)
    store = DemoStore.open(out)
    assert store.n_episodes == 2 and store.array("action").shape[0] == store.n_steps == 10


def _tree_hash(path) -> str:
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            h.update(name.encode())
            with open(os.path.join(root, name), "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def test_an_existing_store_of_someone_else_is_never_written(make_store, tmp_path, capsys):
    theirs = make_store(2)
    before = _tree_hash(theirs.path)
    src = robomimic_lift_file(tmp_path / "a.hdf5")
    _fails(capsys, [str(src), f"out={theirs.path}"], "data.convert did not write (origin: user)")
    assert _tree_hash(theirs.path) == before
