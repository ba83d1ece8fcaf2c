"""Task names -> specs and instructions (no simulator is started here)."""

from __future__ import annotations

import pytest

from envs.libero_tasks import SUITES as LIBERO_SUITES
from envs.metaworld_tasks import METAWORLD_INSTRUCTIONS
from envs.registry import ROBOSUITE_NAMES, known_tasks, resolve_tasks
from envs.robosuite_env import DEFAULT_STATE_KEYS
from envs.spec import EnvSpec


@pytest.mark.parametrize("name", sorted(ROBOSUITE_NAMES))
def test_robosuite_names(name):
    (task,) = resolve_tasks(name)
    spec = task["env_spec"]
    assert task["name"] == name and spec.simulator == "robosuite" and spec.task == ROBOSUITE_NAMES[name]
    assert spec.cameras == [] and spec.state_keys == list(DEFAULT_STATE_KEYS)
    other = resolve_tasks("door" if name != "door" else "lift")[0]
    assert task["instruction"] and task["instruction"] != other["instruction"]
    assert EnvSpec.from_dict(spec.to_dict()) == spec  # what a store saves rebuilds it


def test_images_and_overrides():
    (task,) = resolve_tasks("lift", images=True, image_size=64, horizon=120)
    spec = task["env_spec"]
    assert spec.cameras == ["agentview", "robot0_eye_in_hand"]
    assert spec.image_size == 64 and spec.horizon == 120
    assert resolve_tasks("PickPlaceCan")[0]["name"] == "can"  # robosuite's own names work too
    with pytest.raises(ValueError, match="unknown env spec overrides"):
        resolve_tasks("lift", camera_size=64)
    with pytest.raises(ValueError, match="image_size must be positive"):
        resolve_tasks("lift", images=True, image_size=0)


def test_metaworld_names_and_sets():
    (task,) = resolve_tasks("reach-v3", images=True)
    assert task["env_spec"].simulator == "metaworld" and task["env_spec"].cameras == ["corner2"]
    assert task["instruction"] == METAWORLD_INSTRUCTIONS["reach-v3"]
    mt10 = resolve_tasks("mt10")
    assert len(mt10) == 10 and len({t["name"] for t in mt10}) == 10
    assert all(t["env_spec"].simulator == "metaworld" for t in mt10)
    assert len(resolve_tasks("MT50")) == 50


def test_comma_lists_make_multi_task_sets():
    tasks = resolve_tasks("lift, can,reach-v3")
    assert [t["name"] for t in tasks] == ["lift", "can", "reach-v3"]
    with pytest.raises(ValueError, match="twice"):
        resolve_tasks("lift,lift")


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown task 'juggle'.*lift, stack, can, door, square, mt10"):
        resolve_tasks("juggle")
    with pytest.raises(ValueError, match="non-empty"):
        resolve_tasks("  ")
    names = known_tasks()
    assert names[:7] == ["lift", "stack", "can", "door", "square", "mt10", "mt50"]
    assert len(names) == 7 + 50 + 5 and "reach-v3" in names and names[-5:] == list(LIBERO_SUITES)
