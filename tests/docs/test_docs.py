"""README.md and docs/*.md stay true: links resolve and quoted commands parse (doc_checks.py says how)."""

from __future__ import annotations

import pytest

from tests.docs.doc_checks import ROOT, broken_links, check_command, doc_files, quoted_commands

COMMANDS = sorted({(p.relative_to(ROOT).as_posix(), c) for p in doc_files() for c in quoted_commands(p)})


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_and_images_resolve(path):
    assert broken_links(path) == []


@pytest.mark.parametrize(("page", "command"), COMMANDS)
def test_quoted_command_parses(page, command):
    check_command(command)


def test_the_docs_quote_commands_of_every_kind():
    heads = {c.split()[0] + " " + c.split()[1] for _, c in COMMANDS if c.startswith("python")}
    assert {"python train.py", "python eval_rollouts.py", "python -m"} <= heads
    assert any(c.startswith("make ") for _, c in COMMANDS)


@pytest.mark.parametrize("command", [
    "python train.py policy=mode task.n_demo=5",                       # a renamed config key
    "python train.py policy=transformer",                              # an unknown group option
    "python eval_rollouts.py checkpoint=latest n_episode=5",           # eval_rollouts.py key
    "python -m data.generate task=lift n_episode=5",                   # a key=value module
    "python -m data.convert demo.hdf5 out=x.zarr camera=agentview",
    "python -m data.export datasets/lift.zarr out=x.hdf5 fmt=robomimic",
    "python -m data.convert.verify datasets/lift.zarr worker=2",
    "python -m benchmarks.suite robosuite-state polices=mode",         # the suite runner's own keys
    "python -m benchmarks.suite robosuite-state budget=tpu",
    "python -m benchmarks.suite report benchmarks/results/suites/mt50-state-cpu --readme-file README.md",
    "python -m benchmarks.charts --output docs/img",                   # an argparse script
    "python benchmarks/train_throughput.py --saved",
    "make trian",                                                      # a Makefile target
])
def test_a_renamed_flag_fails(command):
    with pytest.raises(Exception):  # noqa: B017  (each parser raises its own kind; any failure is the point)
        check_command(command)


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "a.md").write_text("# Title here\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#title-here) [gone](missing.md) [bad anchor](a.md#nope) ![img](x.png)\n"
                    "`[not a link](nowhere.md)`\n```\n[in code](nowhere.md)\n```\n[web](https://example.org)\n")
    assert broken_links(page) == ["missing.md (no such file)", "a.md#nope (no heading #nope in a.md)",
                                  "x.png (no such file)"]
