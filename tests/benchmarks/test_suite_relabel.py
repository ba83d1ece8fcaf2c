"""`python -m benchmarks.suite relabel`: published runs move to the variant that names what they trained
with after a default changed, only when their commands and resolved configs prove it, and a restored
relabelled run is kept by the runner under its new name."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from benchmarks.suite import __main__ as cli
from benchmarks.suite.processes import display
from benchmarks.suite.relabel import relabel
from benchmarks.suite.restore import restore
from benchmarks.suite.runner import SuiteRunner
from benchmarks.suite.suites import VARIANTS, Variant, _mode, get_suite
from benchmarks.suite.tables import asked_for, paired_lines, producers, render

SUITE, BUDGET = get_suite("robosuite-state"), "cpu"
SQUARE = SUITE.select_tasks(["square"])[0]
THEN = {"policy.sample_routes": "true"}  # the default until it became false
OLD_TOPK = Variant("mode-topk", _mode(("policy.sample_routes=false",)))  # the variant the top-k runs had


def published_run(variant: Variant, seed: int, successes: list[int]) -> dict:
    """A finished run as results.json keeps it, trained by `variant`'s command (paths as the runner writes)."""
    runner = SuiteRunner(SUITE, BUDGET, ["mode"], dry_run=True, echo=lambda _: None)
    argv = runner.train_argv(SQUARE, variant, seed, Path("outputs/suites/x/runs/square") / variant.name / "train")
    outcomes = [[1_000_000 + i, ok] for i, ok in enumerate(successes)]
    summary = {"success_rate": sum(successes) / len(successes), "success_ci95": [0.0, 1.0],
               "n_success": sum(successes), "n_episodes": len(successes), "n_errors": 0,
               "per_task": {"square": {"success_rate": sum(successes) / len(successes), "success_ci95": [0.0, 1.0],
                                       "n_success": sum(successes), "n_episodes": len(successes), "n_errors": 0}},
               "seeds": {"n": len(successes), "first": 1_000_000, "sha256": "s"}, "outcomes": outcomes,
               "sampling_noise": "per-episode"}
    return {"schema": 1, "complete": True, "suite": SUITE.name, "budget": BUDGET, "task": "square",
            "variant": variant.name, "seed": seed, "config_hash": runner.config_hash(SQUARE, variant, seed),
            "git_commit": "0" * 40, "git_dirty": False, "started": "2026-12-01T00:00:00",
            "created": "2026-12-01T01:00:00",
            "store": {"path": "datasets/square-100.zarr", "n_episodes": 100, "sha256": "a" * 64, "generated": None},
            "train": {"run_dir": "runs/x", "steps": 5000, "commands": [display(argv)], "segments": 1, "wall_s": 60.0},
            "eval_wall_s": 1.0, "codebook": None, "eval": {"last": summary, "best": None},
            "cost": {"params_total": 1, "params_active": 1, "flops_per_chunk": 1, "latency_b1_ms": 1.0,
                     "latency_device": "cpu", "latency_threads": 1}}


def published_doc() -> dict:
    runs = [published_run(VARIANTS["mode"], 0, [1, 0, 0, 0]), published_run(OLD_TOPK, 0, [1, 1, 1, 0]),
            published_run(VARIANTS["dit"], 0, [1, 1, 0, 0])]
    invocations = [{"time": "2026-12-01T00:00:00", "command": f"python -m benchmarks.suite robosuite-state "
                    f"tasks=square policies={v} seeds=0", "policies": [v], "seeds": [0]}
                   for v in ("mode", "mode-topk", "dit")]
    return {"schema": 1, "suite": SUITE.name, "description": SUITE.description, "budget": BUDGET,
            "budget_spec": {"steps": None, "batch_size": 256, "eval_episodes": 4},
            "tasks": [{"name": t.name} for t in SUITE.tasks], "eval_seed_offset": 1_000_000,
            "variants": {"mode": ["policy=mode"], "mode-topk": ["policy=mode", "policy.sample_routes=false"],
                         "dit": ["policy=dit"]},
            "invocations": invocations, "runs": runs}


def test_runs_move_to_the_variant_that_trains_as_they_did() -> None:
    doc = published_doc()
    before = copy.deepcopy(doc)
    assert relabel(doc, {"mode": "mode-drawn", "mode-topk": "mode"}, THEN, "the default changed") == 2
    runner = SuiteRunner(SUITE, BUDGET, ["mode"], dry_run=True, echo=lambda _: None)
    assert [r["variant"] for r in doc["runs"]] == ["mode", "mode-drawn", "dit"]  # the default first again
    for run in doc["runs"]:
        old = next(r for r in before["runs"] if r["train"] == run["train"])
        assert run["train"]["commands"] == old["train"]["commands"]  # as they were run
        assert run["config_hash"] == runner.config_hash(SQUARE, VARIANTS[run["variant"]], 0)
        if run["variant"] == "dit":
            assert "relabeled" not in run and run["config_hash"] == old["config_hash"]
            continue
        (record,) = run["relabeled"]
        assert record["from"] == old["variant"] and record["config_hash_before"] == old["config_hash"]
        assert record["trained_with"] == {"policy.sample_routes": "true" if old["variant"] == "mode" else "false"}
        assert record["why"] == "the default changed"
    assert list(doc["variants"]) == ["mode", "mode-drawn", "dit"]
    assert doc["variants"]["mode-drawn"] == ["policy=mode", "policy.sample_routes=true"]
    # the top-k run is now the reference of the paired comparisons; the table says what moved and why
    assert paired_lines(doc)[0].startswith("- square: mode-drawn vs mode on 4 paired episodes: 1 vs 3")
    table = render(doc)
    assert "- mode → mode-drawn (square seed 0): trained with policy.sample_routes=true; the default changed" in table
    assert len(producers(doc)) == 3  # each run still traced to the command that asked for it by its old name
    topk = doc["runs"][0]  # asked for as mode-topk before its move, as mode after it
    assert asked_for({"command": "c", "time": "2026-12-01T00:00:00", "policies": ["mode-topk"], "seeds": [0]}, topk)
    assert not asked_for({"command": "c", "time": "2026-12-01T00:00:00", "policies": ["mode"], "seeds": [0]}, topk)
    assert asked_for({"command": "c", "time": "9999", "policies": ["mode"], "seeds": [0]}, topk)


def test_a_relabelled_run_restored_is_kept_by_the_runner(tmp_path) -> None:
    doc = published_doc()
    relabel(doc, {"mode": "mode-drawn", "mode-topk": "mode"}, THEN, "the default changed")
    (tmp_path / "results.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    restore(tmp_path / "results.json", out, echo=lambda _: None)
    said: list[str] = []
    SuiteRunner(SUITE, BUDGET, ["mode", "mode-drawn", "dit"], seeds=[0], tasks=["square"], out=out, dry_run=True,
                echo=said.append).run()
    assert [line for line in said if line.startswith(("=", ">"))] == [
        "= square/mode/seed0: finished earlier, kept", "= square/mode-drawn/seed0: finished earlier, kept",
        "= square/dit/seed0: finished earlier, kept"]


def test_relabelling_is_refused_when_the_runs_did_not_train_so() -> None:
    # drawn-route runs are not runs of today's top-k default
    with pytest.raises(ValueError, match=r"square/mode/seed0: not what mode trains now: policy.sample_routes: "
                                         r"trained true, mode gives false"):
        relabel(published_doc(), {"mode": "mode"}, THEN, "x")
    # a command that differs in another override trained something else
    doc = published_doc()
    doc["runs"][0]["train"]["commands"][0] += " policy.top_k=1"
    with pytest.raises(ValueError, match=r"square/mode/seed0: its train command and mode-drawn's differ in "
                                         r"policy.top_k=1, beyond the keys of then="):
        relabel(doc, {"mode": "mode-drawn"}, THEN, "x")
    # a kept resolved config is compared whole
    doc = published_doc()
    doc["runs"][1]["train_config"] = {"policy.sample_routes": False, "optim.lr": 0.5}
    with pytest.raises(ValueError, match=r"square/mode-topk/seed0: trained with another resolved config than mode "
                                         r"gives now: optim.lr: 0.5 -> 0.001"):
        relabel(doc, {"mode-topk": "mode"}, THEN, "x")
    # without its command, the resolved config says what it trained with; with neither there is nothing to check
    doc = published_doc()
    doc["runs"][1]["train"]["commands"] = []
    doc["runs"][1]["train_config"] = {"policy.sample_routes": False}
    assert relabel(doc, {"mode-topk": "mode"}, THEN, "x") == 1
    del doc["runs"][1]["train_config"]
    doc["runs"][1]["variant"] = "mode-topk"
    with pytest.raises(ValueError, match="records neither its train command nor its resolved config"):
        relabel(doc, {"mode-topk": "mode"}, THEN, "x")
    with pytest.raises(ValueError, match=r"unknown variant\(s\) \['mode-sampled'\]"):
        relabel(published_doc(), {"mode": "mode-sampled"}, THEN, "x")


def test_relabel_command_line(tmp_path, capsys) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(published_doc()))
    assert cli.main(["relabel", str(path), "mode=mode-drawn", "mode-topk=mode", "why=the default changed"]) == 2
    assert "give at least one OLD=NEW, a then= and a why=" in capsys.readouterr().err
    assert cli.main(["relabel", str(path), "mode=mode-drawn", "then=policy.sample_routes", "why=x"]) == 2
    assert "then= takes KEY=VALUE" in capsys.readouterr().err
    assert cli.main(["relabel", str(path), "mode=mode-drawn", "mode-topk=mode", "then=policy.sample_routes=true",
                     "why=the default changed"]) == 0
    assert "2 run(s) relabelled" in capsys.readouterr().out
    assert [r["variant"] for r in json.loads(path.read_text())["runs"]] == ["mode", "mode-drawn", "dit"]
