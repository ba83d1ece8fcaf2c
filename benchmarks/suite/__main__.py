"""One command runs a benchmark suite; another regenerates its table and plots from results.json.

    python -m benchmarks.suite SUITE [policies=mode,dit,cnn] [seeds=0,1,2] [budget=cpu|gpu|smoke]
                                     [tasks=lift,can] [out=DIR] [dry_run=true] [rescore=true]
    python -m benchmarks.suite report DIR... [--markdown] [--readme README.md]
    python -m benchmarks.suite latency OUT [rounds=5] [repeats=20] [threads=1]
    python -m benchmarks.suite restore RESULTS_JSON [out=DIR]
    python -m benchmarks.suite relabel RESULTS_JSON OLD=NEW [...] then=KEY=VALUE [...] why="..."
    python -m benchmarks.suite list

SUITE is one of benchmarks/suite/suites.py (robosuite-state, robosuite-low-data, mt10-state, mt50-state,
mt50-image). Every command the suite runs is printed and kept in DIR/commands.jsonl; rerunning the same
command resumes (finished runs are kept; with rescore=true, those scored with the shared noise stream
are evaluated again). `report` rewrites table.md, success.png and heatmap.png next
to each results.json; --markdown prints the blocks for the README, --readme rewrites the block between
`<!-- suite-results:begin -->` and `<!-- suite-results:end -->` in that file. `latency` measures the b=1
latency of every finished run in OUT again, interleaved in one process (benchmarks/suite/latency.py).
`restore` writes the runs of a published results.json back into a suite directory (default: the suite's
outputs/suites/ folder), so that new runs join them in one table (benchmarks/suite/restore.py).
`relabel` moves published runs to the variant that names what they trained with after a default
changed (benchmarks/suite/relabel.py).
Run from the repository root, with OMP_NUM_THREADS=1 on a shared CPU.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

from envs.threads import prepare_process

prepare_process()  # before any suite command loads torch: waiting threads sleep (envs/threads.py)

BEGIN, END = "<!-- suite-results:begin -->", "<!-- suite-results:end -->"
RUN_KEYS = ("policies", "seeds", "budget", "tasks", "out", "dry_run", "rescore")


def parse_run_args(argv: list[str]) -> dict[str, object]:
    args: dict[str, object] = {"policies": None, "seeds": None, "budget": "cpu", "tasks": None, "out": None,
                               "dry_run": False, "rescore": False}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in RUN_KEYS:
            raise ValueError(f"arguments are key=value with key one of {', '.join(RUN_KEYS)}; got {item!r}")
        if key in ("policies", "tasks"):
            args[key] = [p for p in value.split(",") if p]
        elif key == "seeds":
            try:
                args[key] = [int(s) for s in value.split(",") if s]
            except ValueError:
                raise ValueError(f"seeds must be integers separated by commas, got {value!r}") from None
        elif key in ("dry_run", "rescore"):
            if value.lower() not in ("true", "false"):
                raise ValueError(f"{key} must be true or false, got {value!r}")
            args[key] = value.lower() == "true"
        else:
            args[key] = value
    return args


def readme_block(dirs: list[Path], relative_to: Path) -> str:
    from benchmarks.suite.records import read_json
    from benchmarks.suite.tables import render

    blocks = []
    for d in dirs:
        doc = read_json(d / "results.json")
        prefix = os.path.relpath(d.resolve(), relative_to.resolve()).replace(os.sep, "/") + "/"
        blocks.append(render(doc, image_prefix=prefix, heading="###"))
    return "\n".join(blocks)


def report(argv: list[str]) -> int:
    from benchmarks.suite.records import read_json
    from benchmarks.suite.tables import write_report

    flags = {a for a in argv if a.startswith("--")}
    readme = None
    if "--readme" in argv:
        i = argv.index("--readme")
        if i + 1 >= len(argv):
            raise ValueError("--readme needs a file: --readme README.md")
        readme = Path(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
        flags.discard("--readme")
    unknown = flags - {"--markdown"}
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; report takes --markdown and --readme FILE")
    dirs = [Path(a) for a in argv if not a.startswith("--")]
    if not dirs:
        raise ValueError("report needs one or more suite directories holding results.json")
    for d in dirs:
        doc = read_json(d / "results.json")
        if not doc or "runs" not in doc:
            raise ValueError(f"{d}: no readable results.json there; pass a suite output directory")
        for path in write_report(d, doc, write_doc=False).values():
            print(f"wrote {path}", file=sys.stderr)
    if "--markdown" in flags:
        print(readme_block(dirs, Path.cwd()))
    if readme is not None:
        lines = readme.read_text().splitlines(keepends=True)
        # the markers are lines of their own: a mention of them in the prose (in backticks) is not one
        begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
        ends = [i for i, line in enumerate(lines) if line.strip() == END]
        if len(begins) != 1 or len(ends) != 1 or begins[0] > ends[0]:
            raise ValueError(f"{readme} needs one {BEGIN} line and then one {END} line where the results go; "
                             f"found {len(begins)} and {len(ends)}")
        block = readme_block(dirs, readme.parent)
        readme.write_text("".join(lines[:begins[0] + 1]) + block + ("" if block.endswith("\n") else "\n")
                          + "".join(lines[ends[0]:]))
        print(f"rewrote the results block of {readme}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from benchmarks.suite.processes import terminate_children
    from benchmarks.suite.runner import SuiteError, SuiteRunner
    from benchmarks.suite.suites import SUITES, get_suite


    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(__doc__)
            return 0 if argv else 2
        if argv[0] == "list":
            for s in SUITES.values():
                print(f"{s.name}: {s.description}; budgets {', '.join(s.budgets)}")
            return 0
        if argv[0] == "report":
            return report(argv[1:])
        if argv[0] == "latency":
            from benchmarks.suite import latency

            return latency.main(argv[1:])
        if argv[0] == "restore":
            from benchmarks.suite import restore

            return restore.main(argv[1:])
        if argv[0] == "relabel":
            from benchmarks.suite import relabel

            return relabel.main(argv[1:])
        args = parse_run_args(argv[1:])
        runner = SuiteRunner(get_suite(argv[0]), budget=str(args["budget"]), policies=args["policies"],
                             seeds=args["seeds"], tasks=args["tasks"], out=args["out"], dry_run=bool(args["dry_run"]),
                             rescore=bool(args["rescore"]),
                             command=shlex.join(["python", "-m", "benchmarks.suite", *argv]))
        previous = signal.signal(signal.SIGTERM, terminate_children)  # `kill <pid>`: the running command stops
        try:                                                            # cleanly too (train.py saves last.ckpt)
            runner.run()
        finally:
            signal.signal(signal.SIGTERM, previous)
        if not runner.dry_run:
            print(f"results in {runner.out}: results.json, table.md, success.png")
        return 0
    except (ValueError, SuiteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume (finished runs are kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
