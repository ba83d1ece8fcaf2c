"""The rooms of the house import downward only (walked over every file's `import` statements).

    kernels  <-  policies  <-  serving  <-  training (the application), train.py, eval_rollouts.py, serve.py
    envs  <-  rollouts ;  envs  <-  data ;  robot_client  <-  serving, rollouts
Library rooms (kernels, policies, data, envs) never import Lightning, W&B or the application room;
envs never imports policies; rollouts imports neither policies nor the application nor Lightning/W&B.
robot_client (installed on robots) imports nothing of ours and no torch: numpy and the transport only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPLICATION = {"training", "train", "eval_rollouts", "serve", "benchmarks", "scripts", "tests"}
OURS = {"kernels", "policies", "data", "envs", "rollouts", "serving", "robot_client"}
FRAMEWORKS = {"lightning", "pytorch_lightning", "wandb", "hydra"}
FORBIDDEN = {
    "kernels": APPLICATION | FRAMEWORKS | {"policies", "data", "envs", "rollouts", "serving", "robot_client"},
    "policies": APPLICATION | FRAMEWORKS | {"envs", "rollouts", "serving", "robot_client"},
    "data": APPLICATION | FRAMEWORKS | {"policies", "rollouts", "serving", "robot_client"},
    "envs": APPLICATION | FRAMEWORKS | {"policies", "rollouts", "data", "serving", "robot_client"},
    "rollouts": APPLICATION | FRAMEWORKS | {"policies", "data", "serving"},
    "serving": APPLICATION | FRAMEWORKS | {"envs", "rollouts"},
    "robot_client": APPLICATION | FRAMEWORKS | (OURS - {"robot_client"}) | {"torch"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_imports_point_downward(room):
    offenders = {}
    for path in sorted((ROOT / room).rglob("*.py")):
        bad = imported_roots(path) & FORBIDDEN[room]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f"{room}/ imports a higher room or an application framework: {offenders}"


def test_the_walk_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    import lightning as L\n    from training.module import X\n")
    assert {"lightning", "training"} <= imported_roots(f)
