"""What the docs tests check: relative links and images resolve (anchors too), and every command quoted in a
```bash block parses, in this process, by the parser the command itself would use (nothing is run)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# --- links -------------------------------------------------------------------------------------------

def slug(heading: str) -> str:
    """The anchor the code host gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(0)[1:-1], heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def broken_links(path: Path) -> list[str]:
    """Each relative link or image of `path` (outside code) whose file, or whose #anchor, does not exist."""
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text()))
    bad = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {dest.name})")
    return bad


# --- commands ----------------------------------------------------------------------------------------

def quoted_commands(path: Path) -> list[str]:
    """The command lines of the ```bash blocks: continuation lines and quotes over several lines joined,
    comments dropped, `a && b` split."""
    out = []
    for lang, body in FENCE.findall(path.read_text()):
        if lang not in ("bash", "sh"):
            continue
        pending = ""
        for line in body.replace("\\\n", " ").splitlines():
            pending += line
            try:
                words = shlex.split(pending, comments=True)
            except ValueError:  # a quoted argument that goes on over the next line
                pending += "\n"
                continue
            pending = ""
            command: list[str] = []
            for w in [*words, "&&"]:
                if w in ("&&", "&", ";"):
                    if command:
                        out.append(shlex.join(command))
                    command = []
                else:
                    command.append(w)
    return out


class Parsed(Exception):
    """Raised where a command would start its work: its arguments were accepted."""


def _stop(*_args, **_kwargs):
    raise Parsed


def _expect_parsed(call) -> None:
    """Run `call` (a main with its work replaced by _stop); it must reach the work, not exit with an error."""
    try:
        code = call()
    except Parsed:
        return
    except SystemExit as err:
        raise ValueError(f"exited with {err.code}") from None
    raise ValueError(f"returned {code} before starting its work")


def _with(module, name: str, call) -> None:
    original = getattr(module, name)
    setattr(module, name, _stop)
    try:
        _expect_parsed(call)
    finally:
        setattr(module, name, original)


def check_train(args: list[str]) -> None:
    from training.hydra_configs import compose_train_config

    overrides = [a for a in args if a not in ("--cfg", "job", "hydra", "all")]
    compose_train_config(overrides)


def check_eval(args: list[str]) -> None:
    from training.hydra_configs import compose_eval_config

    compose_eval_config(args)


def check_serve(args: list[str]) -> None:
    from serving.app import server_config
    from training.hydra_configs import compose_app_config

    server_config(compose_app_config("serve", args))  # the values serve.py refuses before loading anything


def check_suite(args: list[str]) -> None:
    from benchmarks.suite import __main__ as cli
    from benchmarks.suite import latency, relabel, restore
    from benchmarks.suite.suites import get_suite

    sub, rest = args[0], args[1:]
    if sub == "list":
        assert not rest, f"list takes no arguments, got {rest}"
    elif sub == "report":
        dirs, _, _ = cli.parse_report_args(rest)
        missing = [d for d in dirs if not (ROOT / d / "results.json").is_file()]
        assert not missing, f"no results.json in {missing}"
    elif sub == "latency":
        _with(latency, "remeasure", lambda: latency.main(rest))
    elif sub == "restore":
        _with(restore, "restore", lambda: restore.main(rest))
    elif sub == "relabel":
        _with(relabel, "relabel", lambda: relabel.main(rest))
    else:
        run = cli.parse_run_args(rest)
        suite = get_suite(sub)
        suite.budget(str(run["budget"]))
        suite.select(run["policies"] or [])
        suite.select_tasks(run["tasks"])


def check_data_module(module: str, args: list[str]) -> None:
    if module == "data.generate":
        from data.generate import parse_args

        parse_args(args)
    elif module == "data.convert":
        from data.convert import cli

        sources, _ = cli.parse_args(args)
        assert sources, "data.convert needs a source"
    elif module == "data.convert.verify":
        from data.convert import verify

        _with(verify, "verify_store", lambda: verify.main(args))
    elif module == "data.export":
        from data import export

        _with(export, "export", lambda: export.main(args))
    elif module == "data.inspect":
        from data import inspect

        _with(inspect, "_describe", lambda: inspect.main(args))
    else:
        raise ValueError(f"no parser check for {module}")


def load_script(script: str):
    """A script run as `python benchmarks/x.py` imports its siblings as top-level modules (`from common
    import ...`): load it under a name of its own with its folder on the path, after the packages."""
    path = ROOT / script
    sys.path.append(str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"_doc_script_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
    return mod


def check_argparse_main(module: str, args: list[str], script: str | None = None) -> None:
    """A benchmark whose main() builds an argparse parser: parse `args` with it and stop there."""
    mod = load_script(script) if script else importlib.import_module(module)
    original, argv = argparse.ArgumentParser.parse_args, sys.argv

    def parse_then_stop(self, a=None, namespace=None):
        original(self, args if a is None else a, namespace)
        raise Parsed

    argparse.ArgumentParser.parse_args = parse_then_stop
    sys.argv = [module, *args]
    try:
        _expect_parsed(lambda: mod.main())
    finally:
        argparse.ArgumentParser.parse_args, sys.argv = original, argv


def check_make(args: list[str]) -> None:
    done = subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise ValueError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "make -n failed")


def check_command(command: str) -> None:
    """Raise (ValueError, or the parser's own error) when `command` would not parse; commands this check does
    not know are an error too, so a new kind of command gets a check."""
    words = shlex.split(command)
    while words and (ENV_ASSIGNMENT.match(words[0]) or words[0] == "nohup"):
        words = words[1:]
    head, args = words[0], words[1:]
    if head == "make":
        return check_make(args)
    if head == "bash":
        assert (ROOT / args[0]).is_file(), f"{args[0]} does not exist"
        syntax = subprocess.run(["bash", "-n", str(ROOT / args[0])], capture_output=True, text=True, timeout=30)
        if syntax.returncode:
            raise ValueError(f"{args[0]}: {syntax.stderr.strip()}")
        return None
    if head in ("source", "pip", "python3.11", "wandb", "ssh"):
        return None  # the shell's, pip's and ssh's own commands
    if head == "python" and args[0] == "-c":
        return None  # Python itself
    if head != "python":
        raise ValueError(f"no check for commands starting with {head!r}")
    if args[0] == "-m":
        module, args = args[1], args[2:]
    elif args[0].endswith(".py"):
        script, args = args[0], args[1:]
        if script == "train.py":
            return check_train(args)
        if script == "eval_rollouts.py":
            return check_eval(args)
        if script == "serve.py":
            return check_serve(args)
        assert (ROOT / script).is_file(), f"{script} does not exist"
        return check_argparse_main(script, args, script=script)
    else:
        raise ValueError(f"no check for {command!r}")
    if module == "benchmarks.suite":
        return check_suite(args)
    if module.startswith("data."):
        return check_data_module(module, args)
    if module.startswith("benchmarks."):
        return check_argparse_main(module, args)
    raise ValueError(f"no check for python -m {module}")
