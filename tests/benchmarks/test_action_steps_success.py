"""benchmarks/action_steps_success.py on the fake env: each Ta is what the episodes executed, episodes
pair up by seed across Ta, and an evaluation already in --out is reused."""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks import action_steps_success as bench
from benchmarks.common import Recorder
from policies.base import POLICY_REGISTRY
from tests import eval_fakes
from tests.envs import fake_env

TASKS = [  # task a succeeds at its 3rd step, task b never does (6 steps)
    {"name": "a", "instruction": "do a", "env_spec": {"horizon": 6, "task_id": 0, "succeed_at": 3}},
    {"name": "b", "instruction": "do b", "env_spec": {"horizon": 6, "task_id": 1}},
]


@pytest.fixture(autouse=True)
def registered_fake_policy():
    eval_fakes.register()
    yield
    POLICY_REGISTRY.pop(eval_fakes.POLICY_NAME, None)


def run_main(monkeypatch, capsys, *argv: str) -> list[dict]:
    monkeypatch.setattr(sys, "argv", ["action_steps_success", *argv])
    bench.main()
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_each_action_steps_value_is_executed_and_an_earlier_evaluation_is_reused(tmp_path, monkeypatch, capsys):
    ckpt = eval_fakes.write_checkpoint(tmp_path / "last.ckpt", TASKS)  # the policy predicts 2 actions a chunk
    argv = (f"fake={ckpt}", "--action-steps", "2,1", "--episodes", "4", "--workers", "1", "--out",
            str(tmp_path / "out"), "--eval", f"env_factory={fake_env.__name__}:make_env")
    recs = run_main(monkeypatch, capsys, *argv)
    got = {(r["case"], r["metric"]): r for r in recs}
    metrics = ("success_rate", "mcnemar_p", "policy_calls_per_episode")
    assert set(got) == {(f"ta{k}", m) for k in (2, 1) for m in metrics}
    for k in (2, 1):
        rate = got[f"ta{k}", "success_rate"]
        assert (rate["n_success"], rate["episodes"], rate["value"]) == (2, 4, 0.5) and rate["run"] == "fake"
        info = json.loads((tmp_path / "out" / "fake" / f"ta{k}" / "eval_info.json").read_text())
        assert info["aggregate"]["n_action_steps"] == k
    # a episodes stop at step 3, b episodes run 6 steps: ceil(3/2)+ceil(6/2) and 3+6 calls for two episodes
    assert got["ta2", "policy_calls_per_episode"]["value"] == 2.5
    assert got["ta1", "policy_calls_per_episode"]["value"] == 4.5
    assert got["ta1", "mcnemar_p"]["paired"] == 4 and got["ta1", "mcnemar_p"]["only_this"] == 0

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated again")

    monkeypatch.setattr("training.evaluate.evaluate", no_evaluation)
    assert [r["value"] for r in run_main(monkeypatch, capsys, *argv)] == [r["value"] for r in recs]


def test_pairs_count_the_episodes_only_one_solved() -> None:
    rec = Recorder("action_steps_success")
    ref = {1: True, 2: True, 3: False, 4: False, 5: True}
    got = {1: True, 2: False, 3: True, 4: True, 6: True}  # seed 5 and 6 ran in one of them only
    bench.emit_pair(rec, "ta4", ref, got, run="r")
    rate, pair = rec.records
    assert rate["n_success"] == 4 and rate["episodes"] == 5
    assert (pair["only_this"], pair["only_reference"], pair["paired"]) == (2, 1, 4) and pair["value"] == 1.0


def test_bad_arguments_are_one_line_errors() -> None:
    with pytest.raises(SystemExit, match="distinct integers >= 1"):
        bench.parse_action_steps("4,4")
    with pytest.raises(SystemExit, match="integers separated by commas"):
        bench.parse_action_steps("4,x")
    with pytest.raises(SystemExit, match="run names are distinct"):
        bench.named_runs(["../up=a.ckpt"])
    assert bench.named_runs(["a.ckpt", "b=b.ckpt"]) == {"run1": "a.ckpt", "b": "b.ckpt"}
