"""Each task config carries its own training budget: `python train.py task=<name>` trains for the task's
`train_steps`, an explicit `trainer.max_steps=` still wins, and trainer=smoke keeps its few steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.training.helpers import CONF_DIR
from training.hydra_configs import CONF_TASK, load_task_config

TASKS = sorted(p.stem for p in Path(CONF_TASK).glob("*.yaml"))


def max_steps(*overrides: str) -> int:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return int(cfg.trainer.max_steps)


@pytest.mark.parametrize("task", TASKS)
def test_every_task_trains_for_its_recipe(task: str) -> None:
    steps = load_task_config(task)["train_steps"]
    assert isinstance(steps, int) and steps > 0
    assert max_steps(f"task={task}") == steps
    assert max_steps(f"task={task}", "trainer=ddp") == steps


def test_recipes_differ_where_tasks_do_and_overrides_win() -> None:
    assert len({load_task_config(t)["train_steps"] for t in TASKS}) > 1  # not one number copied everywhere
    assert max_steps("task=square", "trainer.max_steps=7") == 7
    smoke = max_steps("task=square", "trainer=smoke")
    assert smoke != load_task_config("square")["train_steps"] and smoke == max_steps("task=lift", "trainer=smoke")


def test_unknown_task_config_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown task config 'nope'; known: .*lift"):
        load_task_config("nope")
