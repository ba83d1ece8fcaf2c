"""Convert a foreign dataset into a demo store.

    python -m data.convert SRC [SRC ...] out=DST [format=auto|robomimic|robosuite|libero|lerobot]
        [obs_keys=a,b] [cameras=agentview,...] [obs_map=src:dst,...] [image_size=N] [max_episodes=N]
        [filter=train] [verify=true] [workers=N] [flip=vertical|rot180|none] [model_file=true|false]

The format is detected from the files: an HDF5 with `data/demo_*/obs` is robomimic (LIBERO when
`data.attrs` holds `problem_info`); one with states but no observations is robosuite's own format,
converted by replaying the states; a folder with `meta/info.json` is a LeRobot dataset. Several
files (or a folder of them) are one LIBERO suite. `workers` sets the processes of the verify replay.

The store records its origin ({"kind": "converted", format, sources, options}) and, in the attribute
`source`, what the reader found (files, robosuite version, frame flips, key renames, episode ids).
Episodes are appended one at a time through `DemoStore.append_episode` (atomic), so Ctrl-C or a
crash leaves a valid store; re-running the same command tops it up (skips the episodes already
there; a larger max_episodes adds more). A DST converted from another source or with other options
is refused. SRC is only ever opened read-only.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from typing import Any

from data.cli_args import parse_bool
from data.convert.common import parse_list, parse_obs_map
from data.convert.hdf5 import demo_names, open_hdf5, text_attr
from data.convert.source import ConvertError
from data.store import DemoStore, StoreError
from envs.progress import EpisodeProgress

FORMATS = ("robomimic", "robosuite", "libero", "lerobot")
FORMAT_OPTIONS = {"flip": "libero", "model_file": "robosuite"}  # options only one format takes
DEFAULTS: dict[str, Any] = {"out": None, "format": "auto", "obs_keys": None, "cameras": None, "obs_map": None,
                            "image_size": None, "max_episodes": None, "filter": None, "verify": False,
                            "workers": 0, "flip": None, "model_file": None}
_NOT_IDENTITY = ("max_episodes", "verify", "workers")  # may change between runs that top a store up


def detect_format(sources: list[str]) -> str:
    """The format of SRC, from its files alone."""
    from data.convert.libero import libero_files

    if len(sources) == 1 and os.path.isfile(os.path.join(sources[0], "meta", "info.json")):
        return "lerobot"
    kinds = {}
    for path in libero_files(sources):
        with open_hdf5(path) as f:
            first = f["data"][demo_names(f, path)[0]]
            if text_attr(f["data"].attrs, "problem_info") is not None:
                kinds[path] = "libero"
            elif "obs" in first:
                kinds[path] = "robomimic"
            elif "states" in first:
                kinds[path] = "robosuite"
            else:
                raise ConvertError(f"{path}:data/{first.name.rsplit('/', 1)[-1]} has neither obs/ nor states: "
                                   "not a robomimic, robosuite or LIBERO demonstration file")
    if (len(kinds) > 1 or any(os.path.isdir(s) for s in sources)) and set(kinds.values()) != {"libero"}:
        raise ConvertError(f"several files convert into one store only as a LIBERO suite; these are "
                           f"{sorted(set(kinds.values()))}: convert robomimic/robosuite files one at a time")
    return next(iter(kinds.values()))


def make_reader(fmt: str, sources: list[str], options: dict[str, Any]):
    for opt, owner in FORMAT_OPTIONS.items():
        if opt in options and fmt != owner:
            raise ConvertError(f"option {opt}= applies to format={owner} only (this source is {fmt})")
    if fmt != "libero" and len(sources) != 1:
        raise ConvertError(f"format={fmt} converts one source at a time, got {len(sources)}")
    if fmt == "robomimic":
        from data.convert.robomimic import RobomimicReader as reader_cls
    elif fmt == "robosuite":
        from data.convert.robosuite_raw import RobosuiteRawReader as reader_cls
    elif fmt == "libero":
        from data.convert.libero import LiberoReader

        return LiberoReader(sources, **options)
    elif fmt == "lerobot":
        if importlib.util.find_spec("data.convert.lerobot") is None:
            raise ConvertError("LeRobot datasets are read by data/convert/lerobot.py, which this installation lacks")
        from data.convert.lerobot import LeRobotReader as reader_cls
    else:
        raise ConvertError(f"unknown format {fmt!r}; known: auto, {', '.join(FORMATS)}")
    try:
        return reader_cls(sources[0], **options)
    except TypeError as err:
        if "unexpected keyword" not in str(err):
            raise
        raise ConvertError(f"format={fmt} does not take one of the options {sorted(options)} ({err})") from None


def _record(fmt: str, sources: list[str], options: dict[str, Any]) -> dict[str, Any]:
    return {"format": fmt, "sources": [os.path.abspath(s) for s in sources],
            "options": {k: v for k, v in sorted(options.items()) if k not in _NOT_IDENTITY}}


def _check_existing(out: str, record: dict[str, Any]) -> DemoStore | None:
    """The store at `out` (read-only) when it is a conversion of this source with these options."""
    if not os.path.exists(out):
        return None
    store = DemoStore.open(out, "r")  # read-only until it is known to be a conversion of this source
    prev = store.origin
    if prev.get("kind") != "converted":
        kind = prev.get("kind", "not recorded")
        raise ConvertError(f"{out} is a demo store data.convert did not write (origin: {kind}); choose another "
                           "out= (an existing store is never written into)")
    if {k: prev.get(k) for k in ("format", "sources", "options")} != record:
        raise ConvertError(f"{out} was converted from {prev.get('sources')} (format {prev.get('format')}, options "
                           f"{prev.get('options')}); this run asks {record['sources']} ({record['format']}, "
                           f"{record['options']}): choose another out= or delete it")
    return store


def _write_attrs(out: str, attrs: dict[str, Any]) -> None:
    import zarr

    zarr.open_group(out, mode="r+", zarr_format=3).attrs.update(attrs)


def convert(sources: list[str], out: str, format: str = "auto", verify: bool = False, workers: int = 0,
            progress: bool = True, **options: Any) -> DemoStore:
    """Convert SRC into the store at `out` (see the module doc); returns it opened read-only."""
    if not sources:
        raise ConvertError("name the dataset to convert: python -m data.convert SRC out=DST")
    if not out:
        raise ConvertError("name the store to write: out=DST")
    for s in sources:
        if os.path.abspath(s) == os.path.abspath(out):
            raise ConvertError(f"out={out} is the source itself; the source is never written")
    fmt = detect_format(sources) if format == "auto" else format
    options = {k: v for k, v in options.items() if v is not None}
    record = _record(fmt, sources, options)
    store = _check_existing(out, record)
    reader = make_reader(fmt, sources, options)
    try:
        for w in getattr(reader, "warnings", []):
            print(f"warning: {w}", file=sys.stderr)
        tasks = [{"name": t.name, "instruction": t.instruction, "env_spec": t.env_spec or {}} for t in reader.tasks]
        if store is not None:
            if [t["name"] for t in store.tasks] != [t["name"] for t in tasks]:
                raise ConvertError(f"{out} holds tasks {[t['name'] for t in store.tasks]}, the source now "
                                   f"{[t['name'] for t in tasks]}: choose another out= or delete it")
            store = DemoStore.open(out, "a")
        skip = store.n_episodes if store else 0
        replays = _write(reader, store, out, tasks, record, skip, progress)
    finally:
        if hasattr(reader, "close"):  # readers holding files close them (not part of DatasetReader)
            reader.close()
    if not os.path.exists(out):
        raise ConvertError(f"{', '.join(sources)} holds no episodes to convert (with these options)")
    if replays:
        from data.convert.verify import ReplayResult, format_report

        print("replaying the recorded actions open-loop here (robosuite source):")
        print(format_report([ReplayResult(i, tasks[0]["name"], n, **r) for i, n, r in replays]))
    if verify:
        _verify(out, workers)
    return DemoStore.open(out, "r")


def _write(reader, store: DemoStore | None, out: str, tasks, record, skip: int, progress: bool) -> list:
    bar = EpisodeProgress(len(reader), f"convert {record['format']}", enabled=progress, done=skip)
    replays, source = [], ""
    try:
        for episode in reader.episodes(skip):
            source = episode.source
            arrays = dict(episode.arrays)
            if episode.states is not None:
                arrays["states"] = episode.states
            if store is None:
                store = DemoStore.create(out, tasks=tasks, action_space=getattr(reader, "action_space", {}),
                                         origin={"kind": "converted", **record})
                _write_attrs(out, {"source": reader.attributes})
            i = store.append_episode(arrays, task=episode.task, seed=episode.seed, success=episode.success)
            if "replay" in episode.metadata:
                replays.append((i, len(arrays["action"]), episode.metadata["replay"]))
            bar.update(success=episode.success)
    except KeyboardInterrupt:
        n = store.n_episodes if store else 0
        print(f"\ninterrupted: {out} keeps {n} complete episodes; re-run the same command to top it up",
              file=sys.stderr)
        raise
    except StoreError as err:
        raise ConvertError(f"{source}: {err}") from None
    finally:
        bar.close()
    if store is not None and skip:  # a top-up: the reader's episode list may have grown
        _write_attrs(out, {"source": reader.attributes})
    return replays


def _verify(out: str, workers: int) -> None:
    from data.convert.verify import format_report, summary, verify_store

    try:
        results = verify_store(out, workers=workers)
    except StoreError as err:  # verify reports, it never fails a conversion
        print(f"verify: skipped: {err}", file=sys.stderr)
        return
    print(format_report(results))
    _write_attrs(out, {"verify": summary(results)})


# --- command line ------------------------------------------------------------------------
def _value(key: str, text: str) -> Any:
    if key in ("verify", "model_file"):
        try:
            return parse_bool(key, text)
        except ValueError as err:
            raise ConvertError(str(err)) from None
    if key in ("image_size", "max_episodes", "workers"):
        if text.lower() in ("none", "null"):
            return None if key != "workers" else 0
        if not text.isdigit():
            raise ConvertError(f"{key} must be a non-negative integer, got {text!r}")
        return int(text)
    if key in ("obs_keys", "cameras"):
        return parse_list(text)
    if key == "obs_map":
        return parse_obs_map(text)
    return text


def parse_args(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """SRC paths and key=value options -> (sources, convert() keyword arguments)."""
    sources, args = [], dict(DEFAULTS)
    for item in argv:
        key, sep, text = item.partition("=")
        if not sep or "/" in key or os.path.exists(item):
            sources.append(item)
            continue
        if key not in DEFAULTS:
            raise ConvertError(f"unknown argument {key!r}; known: {', '.join(DEFAULTS)}")
        args[key] = _value(key, text)
    return sources, args


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: the store keeps its complete episodes


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    try:
        sources, args = parse_args(argv)
        store = convert(sources, **args)
    except (ConvertError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"{store.path}: {store.n_episodes} episodes, {store.n_steps} steps, keys {', '.join(store.keys)}; "
          f"tasks: {', '.join(t['name'] for t in store.tasks)}")
    return 0
