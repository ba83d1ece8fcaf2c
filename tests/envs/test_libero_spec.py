"""LIBERO specs, names, the wire format and converted files: everything that needs no LIBERO environment."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest

from data.convert.cli import convert
from envs import libero_process
from envs.factory import make_env
from envs.libero_tasks import MAX_STEPS, SUITES, catalog
from envs.libero_wire import WireError, read_message, write_message
from envs.registry import libero_spec, resolve_tasks
from envs.spec import EnvSpec
from tests.data.convert.writers import libero_file

OBJECT_TASK = catalog()["libero_object"][2]


def test_specs_by_suite_id_and_name() -> None:
    tasks = resolve_tasks("libero_object")
    assert [t["name"] for t in tasks] == [t["name"] for t in catalog()["libero_object"]]
    spec = tasks[2]["env_spec"]
    assert spec.task == OBJECT_TASK["name"] and spec.suite == "libero_object" and spec.horizon == MAX_STEPS[spec.suite]
    assert tasks[2]["instruction"] == OBJECT_TASK["instruction"]
    assert resolve_tasks("libero_object/2")[0]["env_spec"] == spec == resolve_tasks(OBJECT_TASK["name"])[0]["env_spec"]
    image = resolve_tasks("libero_object/2", images=True)[0]["env_spec"]
    assert image.cameras == ["agentview", "eye_in_hand"] and "object-state" not in image.state_keys
    assert EnvSpec.from_dict(spec.to_dict()) == spec  # a stored spec rebuilds itself
    assert EnvSpec(simulator="libero", suite="libero_object", task="2").task == OBJECT_TASK["name"]
    # Other simulators' stored specs are as before: no LIBERO fields.
    assert "suite" not in resolve_tasks("lift")[0]["env_spec"].to_dict()


def test_bad_names_and_init_states_say_what_is_valid() -> None:
    with pytest.raises(ValueError, match="unknown LIBERO suite 'libero_foo'; known: " + ", ".join(SUITES)):
        EnvSpec(simulator="libero", suite="libero_foo", task="0")
    with pytest.raises(ValueError, match=r"has no task 'nope'; its tasks .*\n  0: pick_up_the_alphabet_soup"):
        resolve_tasks("libero_object/nope")
    with pytest.raises(ValueError, match="libero_spatial has tasks 0-9, not 10"):
        resolve_tasks("libero_spatial/10")
    with pytest.raises(ValueError, match=r"init_state 50 out of range: LIBERO libero_goal tasks have 50 init states "
                                         r"\(0-49\)"):
        libero_spec("libero_goal", 0, init_state=50)
    with pytest.raises(ValueError, match="suite and init_state are LIBERO fields"):
        EnvSpec(simulator="robosuite", task="Lift", init_state=3)


def test_missing_libero_environment_is_one_line_naming_the_make_target(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(libero_process.LIBERO_PYTHON_VAR, str(tmp_path / "no-python"))
    assert not libero_process.libero_available()
    with pytest.raises(libero_process.LiberoUnavailable, match="run `make libero-env`") as err:
        make_env(libero_spec("libero_object", 0))
    assert "\n" not in str(err.value)


def test_wire_round_trip_and_refusals() -> None:
    arrays = {"f": np.arange(6, dtype=np.float32).reshape(2, 3), "u": np.zeros((2, 4, 4, 3), np.uint8),
              "scalar": np.array(3.5), "empty": np.zeros((0, 7)), "flags": np.array([True, False])}
    buf = io.BytesIO()
    write_message(buf, {"cmd": "step", "n": 1}, arrays)
    write_message(buf, {"cmd": "close"})
    buf.seek(0)
    header, got = read_message(buf)
    assert header == {"cmd": "step", "n": 1} and list(got) == list(arrays)
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and np.array_equal(got[k], v)
    assert read_message(buf) == ({"cmd": "close"}, {})
    with pytest.raises(EOFError):
        read_message(buf)
    with pytest.raises(WireError, match="only numeric dtypes"):
        write_message(io.BytesIO(), {}, {"o": np.array([object()], dtype=object)})
    # A foreign stream declaring an object array (what could carry code) is refused before reading it.
    body = json.dumps({"arrays": [{"name": "x", "dtype": "object", "shape": [1]}]}).encode()
    with pytest.raises(WireError, match="only numeric dtypes are accepted"):
        read_message(io.BytesIO(struct.pack(">I", len(body)) + body + b"\0" * 8))
    with pytest.raises(WireError, match="not JSON"):
        read_message(io.BytesIO(struct.pack(">I", 3) + b"\xff\xfe\x00"))


def test_converted_official_files_get_the_live_env_spec_or_one_warning(tmp_path, capsys) -> None:
    name = OBJECT_TASK["name"]
    folder = tmp_path / "libero_object"
    folder.mkdir()
    libero_file(folder / f"{name}_demo.hdf5", OBJECT_TASK["instruction"], size=12)
    other = catalog()["libero_object"][3]
    libero_file(folder / f"{other['name']}_demo.hdf5", "some other instruction", size=12, seed=1)
    libero_file(folder / "MY_OWN_TASK_demo.hdf5", "do something", size=12, seed=2)
    store = convert([str(folder)], str(tmp_path / "s.zarr"), progress=False)
    by_name = {t["name"]: t for t in store.tasks}
    spec = by_name[name]["env_spec"]
    assert spec == libero_spec("libero_object", name, cameras=["agentview", "eye_in_hand"], image_size=12,
                               state_keys=["ee_ori", "ee_pos", "gripper_states", "joint_states"]).to_dict()
    assert by_name[other["name"]]["env_spec"] == {} and by_name["MY_OWN_TASK"]["env_spec"] == {}
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert any("problem_info says 'some other instruction'" in w for w in warnings)
    assert any("MY_OWN_TASK_demo.hdf5: no env spec (neither file name" in w for w in warnings)


def test_rotated_frames_get_no_env_spec(tmp_path, capsys) -> None:
    path, _ = libero_file(tmp_path / f"{OBJECT_TASK['name']}_demo.hdf5", OBJECT_TASK["instruction"])
    store = convert([str(path)], str(tmp_path / "s.zarr"), progress=False, flip="rot180")
    assert store.tasks[0]["env_spec"] == {}
    assert "flip=rot180: the live env delivers frames flipped vertically" in capsys.readouterr().err


def test_evaluating_a_libero_checkpoint_without_the_environment_names_the_make_target(tmp_path, monkeypatch) -> None:
    from eval_rollouts import EvalError, evaluate, load_config
    from policies.base import POLICY_REGISTRY
    from tests import eval_fakes

    eval_fakes.register()
    try:
        spec = libero_spec("libero_object", 2).to_dict()
        ckpt = eval_fakes.write_checkpoint(tmp_path / "libero.ckpt", [{"name": spec["task"], "env_spec": spec}])
        monkeypatch.setenv(libero_process.LIBERO_PYTHON_VAR, str(tmp_path / "no-python"))
        config = load_config([f"checkpoint={ckpt}", "logger=none", "progress=false", "env_factory=null"])
        with pytest.raises(EvalError, match=f"task '{spec['task']}': the LIBERO simulator .* run `make libero-env`"):
            evaluate(config)
    finally:
        POLICY_REGISTRY.pop(eval_fakes.POLICY_NAME, None)
