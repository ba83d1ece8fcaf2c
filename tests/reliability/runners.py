"""Running one battery case through its entry point, in this process: the fixtures' files, and a verdict.

Verdicts: `clear` (refused in one line by an error the entry point prints without a traceback), `accepted`
(ran), `traceback` (another exception: the user would see a traceback), `silent` (a bad input that ran).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from tests.reliability.cases import LONG_NAME  # noqa: F401  (re-exported for the tests)

EVAL_TASKS = [{"name": "lift", "instruction": "lift the cube",
               "env_spec": {"simulator": "robosuite", "task": "Lift", "cameras": ["agentview"], "horizon": 6}}]


def make_tiny_store(path: Path, n_episodes: int = 3):
    from data.store import DemoStore

    rng = np.random.default_rng(0)
    store = DemoStore.create(path, tasks=[{"name": "task0", "instruction": "do it", "env_spec": {}}])
    for i in range(n_episodes):
        n = 12
        store.append_episode({"action": rng.normal(size=(n, 7)).astype(np.float32),
                              "robot0_eef_pos": rng.normal(size=(n, 3)).astype(np.float32),
                              "object": rng.normal(size=(n, 10)).astype(np.float32)}, task=0, seed=i)
    return store


def damage_a_chunk(store_path: Path, key: str = "object") -> Path:
    """Truncate the first chunk file of data/<key> to 31 bytes (a torn write)."""
    chunk = sorted(p for p in (store_path / "data" / key).rglob("*") if p.is_file() and p.name != "zarr.json")[0]
    chunk.write_bytes(chunk.read_bytes()[:31])
    return chunk


def fill(text: str, places: dict[str, str]) -> str:
    for name, value in places.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def places(tmp: Path) -> dict[str, str]:
    """The paths a case may name: a fresh directory, an existing file, a symlink loop, the store."""
    tmp.mkdir(parents=True, exist_ok=True)
    a_file = tmp / "a_file"
    a_file.write_text("not a directory")
    loop = tmp / "loop.zarr"
    if not loop.is_symlink():
        os.symlink(loop, loop)
    return {"tmp": str(tmp), "file": str(a_file), "loop": str(loop)}


def one_line(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text.strip()


def verdict_of_call(call, user_errors: tuple[type[BaseException], ...]) -> tuple[str, str]:
    """Run `call()`; (verdict, message)."""
    try:
        result = call()
    except user_errors as err:
        return ("clear" if one_line(str(err)) else "traceback"), str(err)
    except SystemExit as err:
        return ("clear" if err.code == 2 else "traceback"), f"SystemExit({err.code})"
    except Exception as err:  # noqa: BLE001  (what a user would see as a traceback)
        return "traceback", f"{type(err).__name__}: {err}"
    return "silent", repr(result)[:200]


def verdict_of_main(main, argv: list[str]) -> tuple[str, str, int]:
    """A `main(argv) -> exit code` entry point: clear = non-zero exit with one line on stderr."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except Exception as exc:  # noqa: BLE001
        return "traceback", f"{type(exc).__name__}: {exc}", -1
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    if code == 0:
        return "accepted", "", 0
    message = lines[-1] if lines else ""
    return ("clear" if len(lines) == 1 and message.startswith("error:") else "traceback"), message, code


def train_cfg(store_path: str, overrides: list[str]) -> dict[str, Any]:
    from tests.training.helpers import compose_cfg

    return compose_cfg(store_path, extra=["trainer.max_steps=2", "trainer.val_check_interval=1", *overrides])
