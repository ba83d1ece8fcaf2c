"""Print what a demo store holds: `python -m data.inspect STORE [--check]`.

`--check` also reads every chunk of every array (data/validate.py: chunks present and decodable, floats
finite, checksums matching). The exit status is 1 for a store that fails any check, 0 otherwise.
"""

from __future__ import annotations

import sys

import numpy as np

from data.store import FORMAT_VERSION_CHECKSUMS, DemoStore, StoreError

USAGE = "usage: python -m data.inspect STORE [--check]"


def _nonfinite_summary(path: str, action: np.ndarray, ends: np.ndarray) -> str:
    bad_rows = np.flatnonzero(~np.isfinite(action).all(1))
    episodes = sorted(set(np.searchsorted(ends, bad_rows, side="right").tolist()))
    shown = ", ".join(map(str, episodes[:5])) + (", ..." if len(episodes) > 5 else "")
    return (f"store {path!r}: data/action holds NaN or inf in {len(bad_rows)} row(s) of episode(s) {shown}; "
            f"`python -m data.inspect {path} --check` says what to do")


def _describe(path: str) -> tuple[str, list[str]]:
    """The description, and the problems found while making it (non-finite actions)."""
    store = DemoStore.open(path, "r")
    lengths = store.episode_lengths
    lines = [
        f"store      {path}",
        f"episodes   {store.n_episodes}   steps {store.n_steps}"
        + (f"   length min/mean/max {lengths.min()}/{lengths.mean():.1f}/{lengths.max()}" if len(lengths) else ""),
        f"origin     {store.origin.get('kind', 'not recorded')}   format {store.format_version}",
    ]
    if store.n_episodes:
        lines.append(f"success    {store.episode_success.mean():.1%} of stored episodes")
    lines.append("keys")
    for k in store.keys:
        arr = store.array(k)
        lines.append(f"  {k:<32} {str(tuple(arr.shape)):<22} {arr.dtype}")
    lines.append("tasks")
    counts = np.bincount(store.episode_task, minlength=len(store.tasks)) if store.n_episodes else None
    for i, t in enumerate(store.tasks):
        n = 0 if counts is None else counts[i]
        sim = (t.get("env_spec") or {}).get("simulator", "no simulator")
        lines.append(f"  [{i}] {t['name']:<24} {n:>5} episodes  ({sim})  \"{t['instruction']}\"")
    problems = []
    if store.n_steps:
        action = store.load(["action"])["action"].astype(np.float64)
        if np.isfinite(action).all():
            lines.append("action statistics (per dimension)")
            for name, values in (("min", action.min(0)), ("max", action.max(0)),
                                 ("mean", action.mean(0)), ("std", action.std(0))):
                lines.append(f"  {name:<5} " + " ".join(f"{v:+.3f}" for v in values))
        else:  # statistics over NaN are NaN: say why instead of printing them
            problems.append(_nonfinite_summary(path, action, store.episode_ends))
            lines.append("action statistics  not computed: the actions hold NaN or inf (see the error below)")
    return "\n".join(lines), problems


def describe(path: str) -> str:
    return _describe(path)[0]


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--check"]
    if len(args) != 1 or args[0] in ("-h", "--help") or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    path, deep = args[0], "--check" in argv
    try:
        text, problems = _describe(path)
    except StoreError as err:
        text, problems = None, [str(err)]
    if deep or text is None:
        # All problems, each named precisely (the deep check locates what the description tripped over).
        problems = DemoStore.problems_at(path, deep=deep) or problems
    if text is not None:
        print(text)
    if deep and not problems:
        if DemoStore.open(path).format_version >= FORMAT_VERSION_CHECKSUMS:
            print("check      passed: every chunk present and decodable, floats finite, checksums match")
        else:
            print("check      passed: every chunk decodable, floats finite (a format-1 store has no checksums, "
                  "and a deleted chunk cannot be told from an all-zero one it never wrote)")
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
