"""One command runs a benchmark suite; another regenerates its table and plots from results.json.

    python -m benchmarks.suite SUITE [policies=mode,dit,cnn] [seeds=0,1,2] [budget=cpu|gpu|smoke]
                                     [tasks=lift,can] [out=DIR] [dry_run=true] [rescore=true]
    python -m benchmarks.suite report DIR... [--markdown] [--results docs/results.md [--readme README.md]]
    python -m benchmarks.suite latency OUT [rounds=5] [repeats=20] [threads=1]
    python -m benchmarks.suite restore RESULTS_JSON [out=DIR]
    python -m benchmarks.suite relabel RESULTS_JSON OLD=NEW [...] then=KEY=VALUE [...] why="..."
    python -m benchmarks.suite list

SUITE is one of benchmarks/suite/suites.py (robosuite-state, robosuite-low-data, mt10-state, mt50-state,
mt50-image). Every command the suite runs is printed and kept in DIR/commands.jsonl; rerunning the same
command resumes (finished runs are kept; with rescore=true, those scored with the shared noise stream
are evaluated again). `report` rewrites table.md, success.png and heatmap.png next
to each results.json; --markdown prints the blocks, --results writes the whole results page (every block,
per-task tables and provenance folded), and --readme rewrites the summary (a table of the suite tasks that
MoDE, DiT and CNN all ran at budget=cpu, and its picture beside the results page, in img/) between
`<!-- suite-results:begin -->` and `<!-- suite-results:end -->` in that file. `latency` measures the b=1
latency of every finished run in OUT again, interleaved in one process (benchmarks/suite/latency.py).
`restore` writes the runs of a published results.json back into a suite directory (default: the suite's
outputs/suites/ folder), so that new runs join them in one table (benchmarks/suite/restore.py).
`relabel` moves published runs to the variant that names what they trained with after a default
changed (benchmarks/suite/relabel.py).
Run from the repository root, with OMP_NUM_THREADS=1 on a shared CPU.
"""

from __future__ import annotations

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


REPORT_FILE_OPTIONS = ("--results", "--readme")


def parse_report_args(argv: list[str]) -> tuple[list[Path], set[str], dict[str, Path]]:
    """report's arguments -> (suite directories, flags, {--results / --readme: file}); nothing is read."""
    argv, files = list(argv), {}
    for option in REPORT_FILE_OPTIONS:
        if option in argv:
            i = argv.index(option)
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ValueError(f"{option} needs a file: --results docs/results.md --readme README.md")
            files[option] = Path(argv[i + 1])
            argv = argv[:i] + argv[i + 2:]
    flags = {a for a in argv if a.startswith("--")}
    if unknown := flags - {"--markdown"}:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; report takes --markdown, --results FILE "
                         "and --readme FILE")
    if "--readme" in files and "--results" not in files:
        raise ValueError("--readme links its summary to the full tables: give --results docs/results.md too")
    dirs = [Path(a) for a in argv if not a.startswith("--")]
    if not dirs:
        raise ValueError("report needs one or more suite directories holding results.json")
    return dirs, flags, files


def replace_block(path: Path, block: str) -> None:
    """Rewrite the lines between the BEGIN and END marker lines of `path` with `block`."""
    lines = path.read_text().splitlines(keepends=True)
    # the markers are lines of their own: a mention of them in the prose (in backticks) is not one
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(begins) != 1 or len(ends) != 1 or begins[0] > ends[0]:
        raise ValueError(f"{path} needs one {BEGIN} line and then one {END} line where the results go; "
                         f"found {len(begins)} and {len(ends)}")
    path.write_text("".join(lines[:begins[0] + 1]) + block + ("" if block.endswith("\n") else "\n")
                    + "".join(lines[ends[0]:]))


def report(argv: list[str]) -> int:
    from benchmarks.suite import pages
    from benchmarks.suite.plots import summary_plot
    from benchmarks.suite.records import read_json
    from benchmarks.suite.tables import render, write_report

    dirs, flags, files = parse_report_args(argv)
    docs = []
    for d in dirs:
        doc = read_json(d / "results.json")
        if not doc or "runs" not in doc:
            raise ValueError(f"{d}: no readable results.json there; pass a suite output directory")
        docs.append(doc)
        for path in write_report(d, doc, write_doc=False).values():
            print(f"wrote {path}", file=sys.stderr)
    if "--markdown" in flags:
        print("\n".join(render(doc, image_prefix=pages.relative(d, Path.cwd()) + "/", heading="##", fold=True)
                        for d, doc in zip(dirs, docs)))
    if page := files.get("--results"):
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(pages.results_page(dirs, docs, page, shlex.join(["python", "-m", "benchmarks.suite",
                                                                          "report", *argv])))
        print(f"wrote {page}", file=sys.stderr)
    if readme := files.get("--readme"):
        rows = pages.summary_rows(docs)
        if not rows:
            raise ValueError(f"no suite task at budget={pages.SUMMARY_BUDGET} has a row for each of "
                             f"{', '.join(pages.SUMMARY_POLICIES)}: nothing to summarise in {readme}")
        picture = page.parent / "img" / "results-summary.png"
        picture.parent.mkdir(parents=True, exist_ok=True)
        summary_plot(rows, pages.SUMMARY_POLICIES, pages.POLICY_TITLES, picture)
        replace_block(readme, pages.summary_markdown(rows, pages.relative(picture, readme.parent),
                                                     pages.relative(page, readme.parent)))
        print(f"wrote {picture} and the summary block of {readme}", file=sys.stderr)
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
