"""The suite runner's bookkeeping on a tiny suite of two fake-env tasks with real subprocesses
(`python -m tests.benchmarks.fake_demos`, `python train.py`, `python eval_rollouts.py`): result schema,
identical demos and evaluation seeds across policies, best-by-validation checkpoints, the table and
plots, the report command, and resume (a second invocation launches nothing; a half-finished training
continues with resume=)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks.suite import __main__ as cli
from benchmarks.suite.pages import summary_rows
from benchmarks.suite.plots import heatmap_matrix
from benchmarks.suite.processes import run_subprocess, shown
from benchmarks.suite.records import load_checkpoint
from benchmarks.suite.runner import SuiteError, SuiteRunner
from benchmarks.suite.suites import SUITES, Budget, Suite, SuiteTask, Target, Variant
from benchmarks.suite.tables import fmt_rate, paired_lines, target_lines
from rollouts.stats import wilson_interval
from tests.training.helpers import TINY

FACTORY = "tests.benchmarks.fake_demos:make_env"
COMMON = ("task=lift", "task.obs_keys=[state]", "data.val_batch_size=8", "data.val_ratio=0.34",
          "optim.warmup_steps=2")


def tiny_variant(policy: str) -> Variant:
    return Variant(policy, lambda budget: (f"policy={policy}", *TINY[policy], "policy.horizon=4",
                                           "policy.n_action_steps=2"))


def tiny_suite(steps: int = 4) -> Suite:
    tasks = (
        SuiteTask("one", (*COMMON, "task.name=one"), "fake-a", ("tests.benchmarks.fake_demos", "tasks=a"), 6,
                  target=Target(1.0, "the fake expert")),
        # checkpoint.mode=max ranks the *worst* validation loss first, so that "best" is usually not the
        # last step and gets an evaluation of its own.
        SuiteTask("two", (*COMMON, "task.name=two"), "fake-ab", ("tests.benchmarks.fake_demos", "tasks=a,b"), 6,
                  n_env_tasks=2, train_overrides=("checkpoint.mode=max",), target=Target(0.8, "a guess")),
    )
    budget = Budget(steps=steps, batch_size=8, eval_episodes=4, seeds=(0,), val_check_interval=2, eval_workers=1,
                    train_overrides=("trainer=smoke",), eval_overrides=(f"env_factory={FACTORY}",))
    return Suite("tiny", "two fake tasks", tasks, {"smoke": budget}, multitask=True,
                 variants={"mode": tiny_variant("mode"), "dit": tiny_variant("dit")})


def runner(out: Path, launched: list, steps: int = 4, **kw) -> SuiteRunner:
    def counting(argv, log):
        launched.append(argv)
        return run_subprocess(argv, log)

    return SuiteRunner(tiny_suite(steps), "smoke", ["mode", "dit"], out=out, execute=counting,
                       echo=lambda line: None, command="python -m benchmarks.suite tiny budget=smoke", **kw)


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    launched: list = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        doc = runner(out, launched).run()
    torch.set_num_threads(threads)
    return out, doc, launched


def runs_by(doc):
    return {(r["task"], r["variant"]): r for r in doc["runs"]}


def test_result_schema_and_numbers(suite_run) -> None:
    out, doc, launched = suite_run
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(doc))
    assert doc["suite"] == "tiny" and doc["budget"] == "smoke" and doc["multitask"] is True
    assert list(runs_by(doc)) == [("one", "mode"), ("one", "dit"), ("two", "mode"), ("two", "dit")]
    phases = [a[1] if a[1].endswith(".py") else a[2] for a in launched]
    assert phases.count("tests.benchmarks.fake_demos") == 2  # one store per suite task, not per policy
    assert phases.count("train.py") == 4
    logged = [json.loads(line)["command"] for line in (out / "commands.jsonl").read_text().splitlines()]
    assert len(logged) == len(launched) and all(c.startswith("python ") for c in logged)
    for r in doc["runs"]:
        assert re.fullmatch(r"[0-9a-f]{12}", r["config_hash"]) and r["complete"] is True
        assert r["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", r["git_commit"])
        assert r["train"]["steps"] == 4 and r["train"]["segments"] == 1 and r["train"]["wall_s"] > 0
        assert r["train"]["commands"][0].startswith(f"python train.py policy={r['variant']} ")
        cost = r["cost"]
        assert cost["params_total"] >= cost["params_active"] > 0
        assert cost["flops_per_chunk"] > 0 and cost["latency_b1_ms"] > 0
        assert r["codebook"] is None  # no codebook in these policies: nothing logged
        assert r["machine"]["packages"]["torch"] == torch.__version__ and r["machine"]["cpu"]
        generated = r["store"]["generated"]  # where and how the demos were made, kept outside the store's hash
        assert generated["command"].startswith("python -m tests.benchmarks.fake_demos ") and generated["machine"]
        last = r["eval"]["last"]
        assert last["n_episodes"] == 4 and last["global_step"] == 4
        assert last["success_ci95"] == pytest.approx(list(wilson_interval(last["n_success"], 4)))
        assert (out / last["eval_info"]).is_file() and last["command"].startswith("python eval_rollouts.py ")
    # The fake env: task a succeeds on every seed, task b never (tests/benchmarks/fake_demos.py).
    assert runs_by(doc)["one", "mode"]["eval"]["last"]["n_success"] == 4
    two = runs_by(doc)["two", "dit"]["eval"]["last"]
    assert two["n_success"] == 2 and two["per_task"]["a"]["n_success"] == 2 and two["per_task"]["b"]["n_success"] == 0


def test_policies_share_demos_and_evaluation_seeds(suite_run) -> None:
    out, doc, _ = suite_run
    by = runs_by(doc)
    for task in ("one", "two"):
        mode, dit = by[task, "mode"], by[task, "dit"]
        assert mode["store"] == dit["store"] and len(mode["store"]["sha256"]) == 64
        configs = [(out / r["train"]["run_dir"] / "config.yaml").read_text() for r in (mode, dit)]
        datasets = [re.search(r"dataset: (\S+)", c).group(1) for c in configs]
        assert datasets[0] == datasets[1] and datasets[0].endswith(mode["store"]["path"])
        seeds = [[e["seed"] for e in json.loads((out / r["eval"]["last"]["eval_info"]).read_text())["episodes"]]
                 for r in (mode, dit)]
        assert seeds[0] == seeds[1] == [1_000_000, 1_000_001, 1_000_002, 1_000_003]
    assert by["one", "mode"]["store"] != by["two", "mode"]["store"]


def test_best_checkpoint_is_the_top1_by_validation(suite_run) -> None:
    out, doc, _ = suite_run
    for (task, _variant), r in runs_by(doc).items():
        ckpts = sorted((out / r["train"]["run_dir"] / "checkpoints").glob("step*.ckpt"))
        scores = {}
        for p in ckpts:
            state = next(v for k, v in load_checkpoint(p)["callbacks"].items() if k.startswith("ModelCheckpoint"))
            scores[p.name] = float(state["current_score"])
        pick = max if task == "two" else min  # task two ranks with checkpoint.mode=max
        want = pick(scores, key=scores.get)
        best = r["eval"]["best"]
        assert Path(best["checkpoint"]).name == want and best["monitor"] == "val/loss"
        assert best["monitor_value"] == pytest.approx(scores[want])
        step = load_checkpoint(out / best["checkpoint"])["global_step"]
        if step == 4:  # the same weights as last.ckpt: its evaluation is reused, not repeated
            assert best["same_as"] == "last" and best["n_success"] == r["eval"]["last"]["n_success"]
        else:
            info = json.loads((out / best["eval_info"]).read_text())
            assert info["global_step"] == step and best["global_step"] == step and "same_as" not in best
    assert any("same_as" not in r["eval"]["best"] for r in doc["runs"])  # task two evaluated a best of its own


def parse_table(text: str) -> dict[tuple[str, str], dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("| task | policy |")]
    start = text.splitlines().index(lines[0])
    rows, header = {}, [c.strip() for c in lines[0].strip("|").split("|")]
    for line in text.splitlines()[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        rows[cells["task"], cells["policy"]] = cells
    return rows


def test_table_and_plots(suite_run, tmp_path, capsys) -> None:
    out, doc, _ = suite_run
    rows = parse_table((out / "table.md").read_text())
    assert list(rows) == [("one", "mode"), ("one", "dit"), ("two", "mode"), ("two", "dit")]
    for key, r in runs_by(doc).items():
        assert rows[key]["success, last EMA [95% CI]"] == fmt_rate(r["eval"]["last"])
        assert rows[key]["episodes"] == "4" and rows[key]["seeds"] == "1" and rows[key]["steps"] == "4"
    assert rows["one", "mode"]["success, last EMA [95% CI]"] == "1.00 [0.51, 1.00]"
    assert rows["two", "dit"]["success, last EMA [95% CI]"] == "0.50 [0.15, 0.85]"
    policies, columns, matrix = heatmap_matrix(doc)
    assert policies == ["mode", "dit"] and columns == ["one", "two/a", "two/b"]
    assert matrix.shape == (2, 3) and matrix.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]
    assert "| b | 0.00 | 0.00 |" in (out / "table.md").read_text()  # the per-task table of task two
    # each task's target, recorded in results.json, judged for every policy
    assert doc["tasks"][1]["target"] == {"success": 0.8, "source": "a guess"}
    assert target_lines(doc) == [
        "- one: target 1.00 (the fake expert); mode 1.00 [0.51, 1.00] reached; dit 1.00 [0.51, 1.00] reached",
        "- two: target 0.80 (a guess); mode 0.50 [0.15, 0.85] below, target inside the 95% interval; "
        "dit 0.50 [0.15, 0.85] below, target inside the 95% interval"]
    assert "Targets per task" in (out / "table.md").read_text()
    # episode outcomes travel in results.json, so paired comparisons need nothing else
    assert [len(r["eval"]["last"]["outcomes"]) for r in doc["runs"]] == [4, 4, 4, 4]
    assert paired_lines(doc)[0] == ("- one: dit vs mode on 4 paired episodes: 4 vs 4 successes; only dit 0, "
                                    "only mode 0; McNemar exact p = 1")
    far = {**doc, "tasks": [{**doc["tasks"][1], "target": {"success": 0.9, "source": "far"}}]}
    assert target_lines(far)[0].endswith("dit 0.50 [0.15, 0.85] not reached")
    # report regenerates everything from a committed results.json alone
    committed = tmp_path / "committed"
    committed.mkdir()
    shutil.copy(out / "results.json", committed / "results.json")
    readme, page = tmp_path / "README.md", tmp_path / "docs" / "results.md"
    # the markers named in the prose (as this README does) are not the block
    readme.write_text(f"# x\nsee `{cli.BEGIN}` and `{cli.END}`\n{cli.BEGIN}\nold\n{cli.END}\ntail\n")
    assert cli.main(["report", str(committed), "--markdown", "--results", str(page)]) == 0
    for name in ("table.md", "success.png", "heatmap.png"):
        assert (committed / name).is_file()
    assert (committed / "success.png").read_bytes()[:4] == b"\x89PNG"
    assert parse_table((committed / "table.md").read_text()) == rows
    printed = capsys.readouterr().out
    assert "## tiny (budget=smoke)" in printed and "| one | mode | 1.00 [0.51, 1.00] |" in printed
    # the results page: every table, the per-task table and the provenance folded, images relative to it
    full = page.read_text()
    assert full.startswith("# Results") and "python -m benchmarks.suite report" in full
    assert "| one | mode | 1.00 [0.51, 1.00] |" in full and "](../committed/success.png)" in full
    assert "<details><summary>Success per env task" in full and "<summary>Provenance" in full
    assert full.index("<summary>Provenance") < full.index("Protocol checks:")
    # the README gets only the summary: rows where MoDE, DiT and CNN all ran at budget=cpu
    assert cli.main(["report", str(committed), "--results", str(page), "--readme", str(readme)]) == 2
    assert "nothing to summarise" in capsys.readouterr().err and "old" in readme.read_text()
    assert summary_rows([{**doc, "budget": "cpu"}]) == []  # no cnn row
    three = {**doc, "budget": "cpu", "runs": doc["runs"] + [{**r, "variant": "cnn"} for r in doc["runs"]
                                                             if r["variant"] == "dit"]}
    rows3 = summary_rows([three])
    assert [r["task"] for r in rows3] == ["one", "two"] and set(rows3[0]["cells"]) == {"mode", "dit", "cnn"}
    (committed / "results.json").write_text(json.dumps(three))
    assert cli.main(["report", str(committed), "--results", str(page), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{cli.END}\ntail\n")
    assert text.startswith(f"# x\nsee `{cli.BEGIN}` and `{cli.END}`\n{cli.BEGIN}\n![success per task and policy]"
                           "(docs/img/results-summary.png)")
    assert "| one (tiny) | 1.00 (4/4) | 1.00 (4/4) | 1.00 (4/4) | p = 1 | p = 1 |" in text
    assert "[docs/results.md](docs/results.md)" in text and "| one | mode |" not in text
    assert (tmp_path / "docs" / "img" / "results-summary.png").read_bytes()[:4] == b"\x89PNG"
    readme.write_text(f"no markers, only `{cli.BEGIN}` in the prose\n")
    assert cli.main(["report", str(committed), "--results", str(page), "--readme", str(readme)]) == 2
    assert "needs one <!-- suite-results:begin --> line" in capsys.readouterr().err
    assert cli.main(["report", str(committed), "--readme", str(readme)]) == 2  # the summary links the page
    assert "give --results docs/results.md too" in capsys.readouterr().err

def test_second_invocation_redoes_nothing(suite_run) -> None:
    out, doc, _ = suite_run
    launched: list = []
    again = runner(out, launched).run()
    assert launched == [] and again["runs"] == doc["runs"]
    with pytest.raises(SuiteError, match="holds a run of another configuration"):
        runner(out, launched, steps=6).run()
    assert launched == []


def test_rescore_evaluates_again_only_runs_scored_with_the_shared_noise_stream(suite_run, tmp_path,
                                                                                monkeypatch) -> None:
    """A run evaluated before eval_info.json recorded its sampling noise is kept by a plain resume and
    evaluated again, per episode, with rescore=true when its checkpoint is here (training, cost and the
    earlier record kept); without its checkpoint it is kept as it was."""
    from benchmarks.suite.tables import check_lines, render

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "suite"
    shutil.copytree(suite_run[0], out)
    for run in ("one/mode", "two/dit"):  # what an older evaluation left: no sampling_noise anywhere
        rdir = out / "runs" / run / "seed0"
        for info_path in rdir.glob("eval-*/eval_info.json"):
            info = json.loads(info_path.read_text())
            del info["aggregate"]["sampling_noise"]
            info_path.write_text(json.dumps(info))
        result = json.loads((rdir / "result.json").read_text())
        for summary in filter(None, result["eval"].values()):
            del summary["sampling_noise"]
        (rdir / "result.json").write_text(json.dumps(result))
    shutil.rmtree(out / "runs" / "two" / "dit" / "seed0" / "train" / "checkpoints")  # as a restored run
    before = json.loads((out / "runs" / "one" / "mode" / "seed0" / "result.json").read_text())
    launched: list = []
    doc = runner(out, launched).run()
    assert launched == []
    assert check_lines(doc)[0].endswith("; sampling noise per episode, except the shared stream for mode seed 0")
    doc = runner(out, launched, rescore=True).run()
    assert {a[1] for a in launched} == {"eval_rollouts.py"}
    assert all("/one/mode/seed0/" in a[2] for a in launched)
    rdir = out / "runs" / "one" / "mode" / "seed0"
    new = runs_by(doc)["one", "mode"]
    assert new["eval"]["last"]["sampling_noise"] == "per-episode" and new["eval"]["last"]["n_episodes"] == 4
    assert new["train"] == before["train"] and new["cost"] == before["cost"] and new["started"] == before["started"]
    assert new["rescored"]["before"]["last"] == {k: before["eval"]["last"][k] for k in ("n_success", "n_episodes")}
    assert json.loads((rdir / "result.before-rescore.json").read_text()) == before
    assert "sampling_noise" not in json.loads((rdir / "eval-last.before-rescore" / "eval_info.json").read_text())[
        "aggregate"]
    assert 0 < new["eval_wall_s"] < before["eval_wall_s"] + sum(
        c["wall_s"] for c in map(json.loads, (rdir / "commands.jsonl").read_text().splitlines())
        if c["phase"] == "eval")
    assert "sampling_noise" not in runs_by(doc)["two", "dit"]["eval"]["last"]  # no checkpoint: kept
    assert check_lines(doc)[1].endswith("; sampling noise per episode, except the shared stream for dit seed 0")
    assert f"{(new['rescored']['git_commit'] or '?')[:10]}" + (" (dirty)" if new["rescored"]["git_dirty"] else "") \
        + " (rescore)" in render(doc)  # the table names the code that evaluated it again
    launched.clear()
    runner(out, launched, rescore=True).run()
    assert launched == []


def test_a_changed_default_makes_a_finished_run_another_configuration(suite_run, tmp_path) -> None:
    """The command lines (and so the config hash) stay the same when a default changes; the resolved config
    does not. An option added since a run trained (absent from its config) is not a change."""
    import yaml

    from benchmarks.suite.resolved import config_changes, flat

    out = tmp_path / "suite"
    shutil.copytree(suite_run[0], out)
    result = json.loads((out / "runs" / "one" / "mode" / "seed0" / "result.json").read_text())
    config_yaml = out / "runs" / "one" / "mode" / "seed0" / "train" / "config.yaml"
    trained = yaml.safe_load(config_yaml.read_text())
    assert result["train_config"] == json.loads(json.dumps(flat(trained)))  # what trained it, kept in the result
    assert "run_dir" not in result["train_config"] and "task.dataset" not in result["train_config"]
    del trained["data"]["max_train_episodes"]  # an option this run predates
    config_yaml.write_text(yaml.safe_dump(trained))
    launched: list = []
    runner(out, launched).run()
    assert launched == []
    trained["optim"]["lr"] = 0.5  # the default it trained with differs from today's
    config_yaml.write_text(yaml.safe_dump(trained))
    with pytest.raises(SuiteError, match=r"trained with another resolved config, though with the same command "
                                         r"line: optim.lr: 0.5 -> 0.001 \(a default"):
        runner(out, launched).run()
    assert launched == []
    # a restored run has no config.yaml: its result's train_config is what is compared
    assert config_changes(result["train_config"], result["train_config"]) == []
    assert config_changes({"a": 1}, {"a": 2, "b": 3}) == ["a: 2 -> 1", "b: 3 -> '<no such key now>'"]


def test_half_finished_training_resumes(suite_run, monkeypatch) -> None:
    out, doc, _ = suite_run
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rdir = out / "runs" / "one" / "mode" / "seed0"
    (rdir / "result.json").unlink()
    ckpts = rdir / "train" / "checkpoints"
    # What a run killed after step 2 leaves: last.ckpt as Lightning saved it at step 2 (the step-2 checkpoint
    # whose ModelCheckpoint state names last.ckpt, as the state inside a saved last.ckpt does), no step 4.
    ckpt = torch.load(ckpts / "step000002.ckpt", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))
    state["last_model_path"] = str(ckpts / "last.ckpt")
    torch.save(ckpt, ckpts / "last.ckpt")
    (ckpts / "step000004.ckpt").unlink(missing_ok=True)
    launched: list = []
    again = runner(out, launched).run()
    trains = [a for a in launched if a[1] == "train.py"]
    assert len(trains) == 1 and trains[0][-1] == f"resume={shown(rdir / 'train')}"
    assert all(a[1] in ("train.py", "eval_rollouts.py") for a in launched)
    r = runs_by(again)["one", "mode"]
    assert r["train"]["steps"] == 4 and r["train"]["segments"] == 2
    assert load_checkpoint(ckpts / "last.ckpt")["global_step"] == 4


def test_training_lost_before_its_first_save_is_not_counted(suite_run, monkeypatch) -> None:
    # A training stopped before it saved anything starts again from step 0: the earlier segment's command
    # and time stay in commands.jsonl (nothing is rewritten) but are not part of the run's record.
    out, _, _ = suite_run
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rdir = out / "runs" / "two" / "dit" / "seed0"
    (rdir / "result.json").unlink()
    shutil.rmtree(rdir / "train" / "checkpoints")
    before = [c for c in map(json.loads, (rdir / "commands.jsonl").read_text().splitlines()) if c["phase"] == "train"]
    again = runner(out, []).run()
    trains = [c for c in map(json.loads, (rdir / "commands.jsonl").read_text().splitlines()) if c["phase"] == "train"]
    r = runs_by(again)["two", "dit"]
    assert len(trains) == len(before) + 1
    assert r["train"]["segments"] == 1 and r["train"]["wall_s"] == round(trains[-1]["wall_s"], 1)
    assert r["train"]["steps"] == 4


def test_command_line_errors(capsys) -> None:
    assert cli.main(["no-such-suite"]) == 2
    assert "unknown suite 'no-such-suite'; choose from robosuite-state" in capsys.readouterr().err
    assert cli.main(["mt50-state", "policies=mode,transformer", "dry_run=true"]) == 2
    assert "unknown policy 'transformer' for suite mt50-state" in capsys.readouterr().err
    assert cli.main(["mt50-state", "budget=tpu"]) == 2
    assert "has no budget 'tpu'; choose from cpu, cpu-long, gpu, smoke" in capsys.readouterr().err
    assert cli.main(["mt50-state", "steps=3"]) == 2
    assert "key one of policies, seeds, budget, tasks, out, dry_run, rescore; got 'steps=3'" in \
        capsys.readouterr().err
    assert cli.main(["mt50-state", "rescore=maybe"]) == 2
    assert "rescore must be true or false, got 'maybe'" in capsys.readouterr().err
    assert [v.name for v in SUITES["mt50-image"].select(["mode", "dit"])] == ["mode", "dit"]
    assert [v.name for v in SUITES["mt50-image"].select(["mode-drawn", "dit"])] == [  # the codebook study's
        "mode-drawn", "mode-codebook", "mode-codebook-t0.1", "mode-linear", "dit"]    # routing: drawn


def test_every_suite_command_composes(tmp_path) -> None:
    """What each suite would run is a valid train.py / eval_rollouts.py command line (Hydra composes it:
    every group option and key exists), and a dry run prints it without writing anything."""
    from hydra import compose, initialize_config_dir

    trains: dict[tuple, list[str]] = {}  # one command per (budget, variant) and per (suite task): the rest
    evals: dict[str, list[str]] = {}     # differ from these only in paths and seeds
    for suite in SUITES.values():
        for budget in suite.budgets:
            lines: list[str] = []
            out = tmp_path / f"{suite.name}-{budget}"
            variants = ["mode", "mode-drawn", "dit", "dit-total", "cnn"]
            SuiteRunner(suite, budget, variants, seeds=[0], out=out, dry_run=True, echo=lines.append).run()
            assert not out.exists()
            commands = [shlex.split(line[2:]) for line in lines if line.startswith("$ ")]
            assert sum(c[1:3] == ["-m", "data.generate"] for c in commands) == len({t.store for t in suite.tasks})
            train = [c[2:] for c in commands if c[1] == "train.py"]
            n_variants = len(variants) + sum(len(v) for v in suite.extras.values())
            assert len(train) == len(suite.tasks) * n_variants
            assert sum(c[1] == "eval_rollouts.py" for c in commands) == 2 * len(train)
            for argv in train:
                trains.setdefault((budget, argv[0], *[a for a in argv if a.startswith("policy.codebook")]), argv)
                task_keys = [a for a in argv if a.startswith(("task", "data.max")) and a.partition("=")[0]
                             not in ("task.dataset", "task.n_demos")]
                trains.setdefault(tuple(task_keys), argv)
            evals[budget] = next(c[2:] for c in commands if c[1] == "eval_rollouts.py")
    conf = str(Path(__file__).resolve().parents[2] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        for argv in trains.values():
            steps = int(next(a for a in argv if a.startswith("trainer.max_steps=")).partition("=")[2])
            assert compose(config_name="config", overrides=argv).trainer.max_steps == steps
        for argv in evals.values():
            cfg = compose(config_name="eval", overrides=[a for a in argv if not a.startswith("checkpoint=")])
            assert cfg.seed_offset == 1_000_000 and cfg.video.n == 0


def test_codebook_metrics_are_the_last_logged_values(tmp_path) -> None:
    from benchmarks.suite.cost import codebook_metrics

    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "metrics.csv").write_text(
        "epoch,step,train/codebook/cam_image/perplexity,train/codebook/cam_image/dead_codes,val/loss\n"
        "0,4,250.5,0.0,\n0,9,,,0.7\n0,14,120.25,3.0,\n0,19,,,0.5\n")
    assert codebook_metrics(tmp_path) == {"cam_image/perplexity": 120.25, "cam_image/dead_codes": 3.0}
    (csv_dir / "metrics.csv").write_text("epoch,step,train/loss\n0,4,1.0\n")
    assert codebook_metrics(tmp_path) is None and codebook_metrics(tmp_path / "nowhere") is None


def test_recipe_budgets_train_each_task_for_its_config_steps() -> None:
    from training.hydra_configs import load_task_config

    for name in ("robosuite-state", "mt50-state"):
        suite = SUITES[name]
        assert suite.budget("cpu").steps is None
        for task in suite.tasks:
            config = next(a.partition("=")[2] for a in task.train_task if a.startswith("task="))
            assert task.steps(suite.budget("cpu")) == load_task_config(config)["train_steps"]
            assert task.steps(suite.budget("gpu")) == suite.budget("gpu").steps


def test_suite_json_keeps_the_policies_of_earlier_invocations(tmp_path) -> None:
    suite = SUITES["mt50-state"]
    (tmp_path / "runs" / "mt50" / "mode" / "seed0").mkdir(parents=True)  # a run of an earlier invocation
    (tmp_path / "suite.json").write_text(json.dumps({"variants": {"dit": ["policy=dit"]}}))
    recorded = SuiteRunner(suite, "cpu", ["cnn"], out=tmp_path, dry_run=True).recorded_variants()
    assert list(recorded) == ["mode", "dit", "cnn"]  # the suite's order, whoever ran first
    assert recorded["cnn"] == ["policy=cnn"]


def test_latency_is_measured_again_interleaved(suite_run, tmp_path) -> None:
    from benchmarks.suite.latency import remeasure
    from benchmarks.suite.results import collect
    from benchmarks.suite.tables import table_lines

    out, _, _ = suite_run
    copy = tmp_path / "suite"
    shutil.copytree(out, copy)
    before = {r["variant"] + r["task"]: r["cost"]["latency_b1_ms"] for r in collect(copy)["runs"]}
    measured = remeasure(copy, rounds=2, repeats=2, echo=lambda line: None)
    assert sorted(measured) == ["one/dit/seed0", "one/mode/seed0", "two/dit/seed0", "two/mode/seed0"]
    doc = collect(copy)
    for r in doc["runs"]:
        cost = r["cost"]
        assert cost["latency_b1_ms"] == measured[f"{r['task']}/{r['variant']}/seed{r['seed']}"] > 0
        assert cost["latency_b1_ms_at_training"] == before[r["variant"] + r["task"]]
        assert len(cost["latency_rounds_ms"]) == 2 and cost["latency_threads"] == 1
    assert f"{measured['one/mode/seed0']:.1f} ms" in "\n".join(table_lines(doc))
    remeasure(copy, rounds=1, repeats=1, echo=lambda line: None)  # a second pass keeps the training-time value
    assert collect(copy)["runs"][0]["cost"]["latency_b1_ms_at_training"] == before[
        doc["runs"][0]["variant"] + doc["runs"][0]["task"]]
    with pytest.raises(ValueError, match="holds no finished run"):
        remeasure(tmp_path / "empty")
    assert cli.main(["latency", str(copy), "rounds=x"]) == 2


def test_produced_by_names_only_invocations_that_made_a_finished_run() -> None:
    from benchmarks.suite.tables import producers

    base = "python -m benchmarks.suite robosuite-state budget=cpu"

    def inv(time: str, args: str, policies: list[str], seeds: tuple = (0,)) -> dict:
        return {"time": f"2026-12-0{time}", "command": f"{base} {args}".strip(), "policies": policies,
                "seeds": list(seeds)}

    doc = {"runs": [{"task": "lift", "variant": "mode", "seed": 0, "created": "2026-12-01T03"},
                    {"task": "square", "variant": "dit", "seed": 0, "created": "2026-12-01T05"}],
           "invocations": [inv("1T01", "", ["mode", "dit", "cnn"]),  # no tasks=: every task
                           inv("1T02", "tasks=square policies=dit", ["dit"]),
                           inv("1T02", "tasks=can policies=mode", ["mode"]),  # interrupted, nothing finished
                           inv("1T02", "tasks=lift,square policies=cnn", ["cnn"]),
                           inv("1T02", "tasks=lift policies=mode seeds=1", ["mode"], (1,)),
                           inv("1T06", "tasks=square policies=dit seeds=0", ["dit"]),  # after it finished
                           {"time": "2026-12-01T02", "policies": ["mode"], "seeds": [0]}]}
    assert producers(doc) == [f"{base}", f"{base} tasks=square policies=dit"]
    # A run trained again later (its start recorded): only the invocation that started it, and one that
    # resumed it, made it; the earlier ones that asked for the same run made the one it replaced.
    doc["runs"][1].update(started="2026-12-02T01", created="2026-12-02T09")
    doc["invocations"] += [inv("2T00", "tasks=square policies=dit", ["dit"]),
                           inv("2T03", "tasks=square policies=dit,cnn", ["dit", "cnn"])]
    assert producers(doc) == [f"{base}", f"{base} tasks=square policies=dit", f"{base} tasks=square policies=dit,cnn"]
    assert producers({**doc, "runs": doc["runs"][1:]}) == [f"{base} tasks=square policies=dit",
                                                            f"{base} tasks=square policies=dit,cnn"]


def test_paired_comparison_matches_episodes_by_training_and_evaluation_seed() -> None:
    def run(variant: str, seed: int, outcomes: list) -> dict:
        return {"task": "t", "variant": variant, "seed": seed, "eval": {"last": {"outcomes": outcomes}}}

    doc = {"runs": [run("mode", 0, [[10, 1], [11, 0], [12, 0]]), run("mode", 1, [[10, 0], [11, 0], [12, 0]]),
                    run("dit", 0, [[10, 1], [11, 1], [12, 1]]), run("dit", 1, [[10, 1], [11, 1]])]}
    # seed 1 episode 12 has no dit outcome: 5 pairs; dit alone succeeds on 4 of them
    assert paired_lines(doc) == ["- t: dit vs mode on 5 paired episodes: 5 vs 1 successes; only dit 4, only mode 0; "
                                 "McNemar exact p = 0.125"]
    doc["runs"].append(run("cnn", 2, [[10, 1]]))  # trained at a seed no other row has
    assert paired_lines(doc)[-1] == "- t: cnn vs mode: no training seed in common, not paired"


def test_protocol_check_compares_stores_per_training_seed() -> None:
    """Seeds may come with their own demos (a store regenerated elsewhere); policies of one seed may not."""
    from benchmarks.suite.tables import check_lines

    def run(variant: str, seed: int, store: str, evals: str = "e", noise: str | None = "per-episode") -> dict:
        return {"task": "t", "variant": variant, "seed": seed, "store": {"sha256": store * 64},
                "eval": {"last": {"seeds": {"sha256": evals}, **({"sampling_noise": noise} if noise else {})}}}

    one = [run("mode", 0, "a"), run("dit", 0, "a")]
    assert check_lines({"runs": one}) == [f"- t: same demo store for every policy (sha256 {'a' * 12}), "
                                          "same evaluation seeds; sampling noise per episode"]
    seeds = [*one, run("mode", 1, "b"), run("dit", 1, "b")]
    assert check_lines({"runs": seeds}) == [
        f"- t: same demo store for every policy at each training seed (seed 0: sha256 {'a' * 12}; seed 1: "
        f"sha256 {'b' * 12}), same evaluation seeds; sampling noise per episode"]
    older = [run("mode", 0, "a", noise=None), run("dit", 0, "a", noise=None)]  # evaluated before the key existed
    assert check_lines({"runs": older})[0].endswith("; sampling noise from the shared stream (scores vary between "
                                                    "evaluations of the same weights)")
    mixed = [*one, run("mode", 1, "b"), run("dit", 1, "c")]
    assert "DIFFERENT demo store" in check_lines({"runs": mixed})[0]
    assert "not like for like" in check_lines({"runs": mixed})[0]
    other_evals = [*one, run("cnn", 0, "a", evals="f")]
    assert "same demo store for every policy (" in check_lines({"runs": other_evals})[0]
    assert "DIFFERENT evaluation seeds" in check_lines({"runs": other_evals})[0]


def test_a_rows_latency_comes_from_its_first_seeds_pass() -> None:
    """A seed added later and timed under load (or in another pass) does not mix into the row's latency."""
    from benchmarks.suite.results import groups

    def run(seed: int, ms: float, measured: str | None) -> dict:
        last = {"n_success": 1, "n_episodes": 2, "success_rate": 0.5, "per_task": {}}
        cost = {"params_total": 1, "params_active": 1, "flops_per_chunk": 1, "latency_b1_ms": ms,
                "latency_device": "cpu", "latency_threads": 1}
        return {"task": "t", "variant": "mode", "seed": seed, "eval": {"last": last},
                "train": {"steps": 1, "wall_s": 1},
                "cost": {**cost, **({"latency_measured": measured} if measured else {})}}

    (g,) = groups({"runs": [run(0, 14.0, "2026-12-02T06:02"), run(1, 38.0, None), run(2, 16.0, "2026-12-02T06:02")]})
    assert g["latency_b1_ms"] == 15.0 and g["latency_pass"] == "2026-12-02T06:02"
    (g,) = groups({"runs": [run(0, 40.0, None), run(1, 12.0, "2026-12-03T09:00")]})
    assert g["latency_b1_ms"] == 40.0 and g["latency_pass"] == ""


def test_restored_runs_join_new_ones_in_one_table(suite_run, tmp_path) -> None:
    """A published results.json restored into a fresh suite directory: the runner redoes none of its runs;
    latency re-times only the runs whose checkpoints are here (the table names the two passes) until the
    stores are back, then all of them, the restored ones on stand-ins."""
    from benchmarks.suite.latency import remeasure
    from benchmarks.suite.restore import restore
    from benchmarks.suite.results import collect
    from benchmarks.suite.tables import check_lines, paired_lines, table_lines

    out = suite_run[0]
    doc = json.loads((out / "results.json").read_text())  # as other tests of this module left it
    fresh = tmp_path / "fresh"
    shutil.copytree(out / "runs" / "two" / "mode", fresh / "runs" / "two" / "mode")  # a run of this machine
    counts = restore(out / "results.json", fresh, echo=lambda line: None)
    assert counts == {"written": 3, "kept": 1, "skipped": 0}
    restored = collect(fresh)
    assert [(r["task"], r["variant"]) for r in restored["runs"]] == [(r["task"], r["variant"]) for r in doc["runs"]]
    for mine, theirs in zip(restored["runs"], doc["runs"]):
        assert mine.get("restored_from") == (None if mine["task"] == "two" and mine["variant"] == "mode"
                                             else str(out / "results.json"))
        assert mine["eval"]["last"]["outcomes"] == theirs["eval"]["last"]["outcomes"]  # paired tests still work
    assert paired_lines(restored) == paired_lines(doc)
    assert restore(out / "results.json", fresh, echo=lambda line: None) == {"written": 0, "kept": 4, "skipped": 0}
    assert len((fresh / "invocations.jsonl").read_text().splitlines()) == len(doc["invocations"])  # not twice

    measured = remeasure(fresh, rounds=1, repeats=1, echo=lambda line: None)
    assert list(measured) == ["two/mode/seed0"]
    table = "\n".join(table_lines(collect(fresh)))
    assert table.count("(p1)") == 3 and table.count("(p2)") == 1

    launched: list = []
    again = runner(fresh, launched).run()
    assert [a[2] for a in launched] == ["tests.benchmarks.fake_demos"] * 2  # the stores, regenerated; no training
    assert all("same demo store" in line for line in check_lines(again))  # the same demos as the published runs
    # With the stores here, the restored runs are timed on stand-ins (their train command, one step) in the
    # same pass as the run with its own weights: one pass, no marks. A stand-in of another network is refused.
    measured = remeasure(fresh, rounds=1, repeats=1, echo=lambda line: None)
    assert sorted(measured) == ["one/dit/seed0", "one/mode/seed0", "two/dit/seed0", "two/mode/seed0"]
    weights = {(r["task"], r["variant"]): r["cost"]["latency_weights"] for r in collect(fresh)["runs"]}
    assert weights.pop(("two", "mode")).startswith("its own") and all("stand-in" in w for w in weights.values())
    assert "(p1)" not in "\n".join(table_lines(collect(fresh)))
    tampered = fresh / "runs" / "one" / "dit" / "seed0" / "result.json"
    result = json.loads(tampered.read_text())
    result["cost"]["params_total"] += 1
    tampered.write_text(json.dumps(result))
    said: list[str] = []
    assert "one/dit/seed0" not in remeasure(fresh, rounds=1, repeats=1, echo=said.append)
    assert any("not the same network" in line for line in said)
    other = tmp_path / "other"  # task one's store here holds other demos: its runs are not restored
    shutil.copytree(out / "datasets" / "fake-ab-6.zarr", other / "datasets" / "fake-a-6.zarr")
    assert restore(out / "results.json", other, echo=lambda line: None) == {"written": 2, "kept": 0, "skipped": 2}
    assert {r["task"] for r in collect(other)["runs"]} == {"two"}
    # No store there yet: everything is restored, and the runner, regenerating the stores, trains again the
    # runs whose published store hash is not the one it made (here task one's, as if made on another machine).
    published = json.loads((out / "results.json").read_text())
    for r in published["runs"]:
        if r["task"] == "one":
            r["store"]["sha256"] = "0" * 64
    (tmp_path / "published.json").write_text(json.dumps(published))
    later = tmp_path / "later"
    assert restore(tmp_path / "published.json", later, echo=lambda line: None)["written"] == 4
    launched = []
    redone = runner(later, launched).run()
    assert [a[1] for a in launched].count("train.py") == 2
    assert {(r["task"], bool(r.get("restored_from"))) for r in redone["runs"]} == {("one", False), ("two", True)}
    assert (later / "runs" / "one" / "mode" / "seed0" / "result.restored.json").is_file()
    assert all("same demo store" in line for line in check_lines(redone))
    with pytest.raises(ValueError, match="not a suite results.json"):
        restore(out / "suite.json", tmp_path / "x")
    assert cli.main(["restore", str(tmp_path / "missing.json")]) == 2


def test_a_restored_run_without_its_train_command_keeps_its_latency(tmp_path) -> None:
    """No checkpoint and no recorded train command (its commands.jsonl was lost): no stand-in to time."""
    from benchmarks.suite.latency import stand_in

    (tmp_path / "datasets" / "s.zarr").mkdir(parents=True)
    result = {"task": "t", "variant": "v", "seed": 0, "cost": {"latency_measured": "2026-01-01"},
              "store": {"path": "datasets/s.zarr"}, "train": {"commands": []}}
    said: list[str] = []
    assert stand_in(tmp_path, result, said.append) is None
    assert said == ["t/v/seed0: no checkpoint and no recorded train command to build a stand-in from; its earlier "
                    "latency (2026-01-01) is kept"]
