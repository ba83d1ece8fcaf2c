"""The transfer study's report: run directories written here by hand (eval_info.json, metrics.csv,
config.yaml), read, grouped, paired and drawn by `python -m benchmarks.transfer_report`."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml

from benchmarks.transfer_report import main
from benchmarks.transfer_report.runs import read_study
from benchmarks.transfer_report.summary import build_doc
from rollouts.stats import mcnemar_exact, wilson_interval

TASK = "libero_object_9"
ENV_TASK = "pick_up_the_orange_juice_and_place_it_in_the_basket"


def write_eval(run, outcomes, created="2026-12-08T10:00:00", name="2026-12-08_10-00-00", errors=()):
    """eval/<name>/eval_info.json with one episode per (episode seed, success); `errors`: seeds that errored."""
    episodes = [{"episode": i, "seed": seed, "task": 0, "task_name": ENV_TASK, "success": bool(ok),
                 "steps": 100, "return": 0.0, "error": "worker timeout" if seed in errors else None}
                for i, (seed, ok) in enumerate(outcomes)]
    path = run / "eval" / name / "eval_info.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"created": created, "global_step": 1000, "tasks": [{"name": ENV_TASK}],
                                "aggregate": {}, "per_task": {}, "episodes": episodes}))


def write_run(study, arm, n, seed, outcomes, val_losses=(), **eval_kw):
    run = study / f"{arm}-{TASK}-{n}-s{seed}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "data": {"max_train_episodes": n}}))
    if val_losses:
        (run / "csv").mkdir()
        with (run / "csv" / "metrics.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epoch", "step", "train/loss", "val/loss"])
            for i, loss in enumerate(val_losses):
                w.writerow([0, 250 * i + 124, 0.5, ""])  # a training row: no validation loss in it
                w.writerow([0, 250 * (i + 1) - 1, "", loss])
    if outcomes is not None:
        write_eval(run, outcomes, **eval_kw)
    return run


def seeds_from(start, successes):
    return [(start + i, ok) for i, ok in enumerate(successes)]


def doc_of(study):
    runs, notes = read_study(study)
    return build_doc(runs, notes, source=str(study))


def group(doc, n, arm):
    return next(g for g in doc["groups"] if (g["n_demos"], g["arm"]) == (n, arm))


def comparison(doc, n, arm):
    return next(c for c in doc["comparisons"] if (c["n_demos"], c["arm"]) == (n, arm))


def test_groups_pool_seeds_with_wilson_intervals_and_keep_per_seed_rates(tmp_path):
    counts = {("scratch", 5): (1, 2), ("ft", 5): (4, 6), ("ctrl", 5): (0, 1), ("scratch", 20): (3, 5)}
    for (arm, n), per_seed in counts.items():
        for seed, k in enumerate(per_seed):
            write_run(tmp_path, arm, n, seed, seeds_from(1000, [1] * k + [0] * (8 - k)))
    doc = doc_of(tmp_path)
    assert [(g["task"], g["n_demos"], g["arm"]) for g in doc["groups"]] == [
        (TASK, 5, "scratch"), (TASK, 5, "ft"), (TASK, 5, "ctrl"), (TASK, 20, "scratch")]
    for (arm, n), per_seed in counts.items():
        g = group(doc, n, arm)
        assert (g["n_success"], g["n_episodes"], g["seeds"]) == (sum(per_seed), 16, [0, 1])
        assert g["success_ci95"] == list(wilson_interval(sum(per_seed), 16))
        assert g["success_rate"] == sum(per_seed) / 16
        assert [(s["seed"], s["n_success"], s["n_episodes"]) for s in g["per_seed"]] == [(0, per_seed[0], 8),
                                                                                          (1, per_seed[1], 8)]
    # no scratch at 20 demos has no partner arm: no comparison; ft and ctrl at 5 demos each get one
    assert sorted((c["n_demos"], c["arm"]) for c in doc["comparisons"]) == [(5, "ctrl"), (5, "ft")]


def test_episodes_pair_on_training_seed_and_episode_seed_for_the_exact_mcnemar_p(tmp_path):
    # seed 0: ft solves episodes 1000-1004 that scratch fails; both solve 1005; both fail 1006-1009
    scratch0 = [0] * 5 + [1] + [0] * 4
    ft0 = [1] * 5 + [1] + [0] * 4
    write_run(tmp_path, "scratch", 5, 0, seeds_from(1000, scratch0))
    write_run(tmp_path, "ft", 5, 0, list(reversed(seeds_from(1000, ft0))))  # the order episodes finished in
    # seed 1: scratch solves everything on the same episode seeds, ft nothing -> only_scratch 10 if paired
    # across training seeds; ft seed 1 was evaluated on other episode seeds, so nothing of it pairs
    write_run(tmp_path, "scratch", 5, 1, seeds_from(1000, [1] * 10))
    write_run(tmp_path, "ft", 5, 1, seeds_from(5000, [0] * 10))
    c = comparison(doc_of(tmp_path), 5, "ft")
    assert (c["n_pairs"], c["only_arm"], c["only_ref"], c["seeds"]) == (10, 5, 0, [0])
    assert (c["arm_successes"], c["ref_successes"], c["unpaired"]) == (6, 1, 20)
    assert c["p"] == pytest.approx(2 * 1 / 2**5) == mcnemar_exact(5, 0)


def test_discordant_episodes_both_ways_give_the_two_sided_binomial_p(tmp_path):
    write_run(tmp_path, "scratch", 20, 2, seeds_from(1000, [1, 1, 0, 0, 0, 0, 1, 1]))
    write_run(tmp_path, "ctrl", 20, 2, seeds_from(1000, [0, 0, 1, 1, 1, 1, 1, 1]))
    c = comparison(doc_of(tmp_path), 20, "ctrl")
    assert (c["only_arm"], c["only_ref"]) == (4, 2)
    assert c["p"] == pytest.approx(min(1.0, 2 * (math.comb(6, 0) + math.comb(6, 1) + math.comb(6, 2)) / 2**6))


def test_an_errored_episode_is_a_failure(tmp_path):
    write_run(tmp_path, "scratch", 5, 0, seeds_from(1000, [1, 1, 1]), errors=(1001,))
    g = group(doc_of(tmp_path), 5, "scratch")
    assert (g["n_success"], g["n_errors"]) == (2, 1)


def test_the_newest_evaluation_of_a_run_counts(tmp_path):
    run = write_run(tmp_path, "ft", 5, 0, seeds_from(1000, [1] * 4), created="2026-12-08T09:00:00",
                    name="zz-first")
    write_eval(run, seeds_from(1000, [0, 0, 0, 1]), created="2026-12-08T11:00:00", name="aa-rescored")
    doc = doc_of(tmp_path)
    assert group(doc, 5, "ft")["n_success"] == 1
    assert doc["runs"][0]["eval_info"] == "ft-libero_object_9-5-s0/eval/aa-rescored/eval_info.json"


def test_final_validation_loss_is_the_last_val_row_of_metrics_csv(tmp_path):
    write_run(tmp_path, "scratch", 5, 0, seeds_from(1000, [0]), val_losses=(0.9, 0.5, 0.25))
    write_run(tmp_path, "scratch", 5, 1, seeds_from(1000, [0]), val_losses=(0.8, 0.75))
    write_run(tmp_path, "scratch", 5, 2, seeds_from(1000, [0]))  # logger=none: no metrics.csv
    doc = doc_of(tmp_path)
    assert doc["runs"][0]["val_loss_curve"] == [[249, 0.9], [499, 0.5], [749, 0.25]]
    g = group(doc, 5, "scratch")
    assert [s["final_val_loss"] for s in g["per_seed"]] == [0.25, 0.75, None]
    assert g["final_val_loss_mean"] == pytest.approx(0.5)


def test_runs_without_an_evaluation_or_a_study_name_are_left_out_with_one_line_each(tmp_path, capsys):
    write_run(tmp_path, "scratch", 5, 0, seeds_from(1000, [1, 0]))
    (tmp_path / "pre" / "checkpoints").mkdir(parents=True)  # the pretraining run: trained, never evaluated
    (tmp_path / "logs").mkdir()  # not a run: passed over without a note
    write_run(tmp_path, "ft", 5, 0, None)  # trained, its evaluation not run yet
    write_eval(tmp_path / "oddly_named", seeds_from(1000, [1]))
    write_run(tmp_path, "ctrl", 5, 1, seeds_from(1000, [1]))
    (tmp_path / "ctrl-libero_object_9-5-s1" / "config.yaml").write_text(yaml.safe_dump({"seed": 2}))
    assert main([str(tmp_path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["note: ctrl-libero_object_9-5-s1: its name says seed 1, its config.yaml seed=2, left out",
                   "note: ft-libero_object_9-5-s0: no eval/*/eval_info.json, left out",
                   "note: oddly_named: not named {arm}-{task}-{n}-s{seed}, left out",
                   "note: pre: no eval/*/eval_info.json, left out"]
    assert [(r["arm"], r["seed"]) for r in doc_of(tmp_path)["runs"]] == [("scratch", 0)]


@pytest.mark.parametrize("make", ["missing", "file", "empty"])
def test_a_bad_directory_is_one_line_of_error(tmp_path, capsys, make):
    target = tmp_path / "study"
    if make == "file":
        target.write_text("not a study")
    elif make == "empty":
        (target / "pre" / "checkpoints").mkdir(parents=True)
    assert main([str(target)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1 and out.err.startswith(f"error: {target}")


def test_the_saved_report_redraws_the_same_table_and_a_plot(tmp_path, capsys):
    study = tmp_path / "study"
    for arm, successes in (("scratch", [0, 0, 1, 0]), ("ft", [1, 1, 1, 0]), ("ctrl", [0, 1, 0, 0])):
        for seed in (0, 1, 2):
            write_run(study, arm, 5, seed, seeds_from(1000, successes), val_losses=(0.3,))
    saved, png = tmp_path / "results" / "transfer.json", tmp_path / "transfer.png"
    assert main([str(study), "--save", str(saved), "--markdown"]) == 0
    first = capsys.readouterr().out
    assert "| libero_object_9 | 5 | ft | 0.75 [0.47, 0.91] | 9 / 12 | s0 3/4, s1 3/4, s2 3/4 | 0.3000 | " \
           "6 / 0 of 12 | 0.0312 |" in first
    doc = json.loads(saved.read_text())
    ft0 = next(r for r in doc["runs"] if r["name"] == "ft-libero_object_9-5-s0")
    assert len(doc["runs"]) == 9 and ft0["outcomes"][:2] == [[ENV_TASK, 1000, 1], [ENV_TASK, 1001, 1]]
    doc["groups"] = []  # an edited summary: redrawn from the runs
    saved.write_text(json.dumps(doc))
    assert main([str(saved), "--markdown", "--plot", str(png)]) == 0
    assert capsys.readouterr().out == first
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_json_that_is_not_a_report_is_one_line_of_error(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"bench": "kernels"}))
    assert main([str(other)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a transfer report" in err
