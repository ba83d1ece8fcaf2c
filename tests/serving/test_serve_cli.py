"""serve.py refuses, in one line and before listening, a checkpoint that does not load and an exposed bind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "serve.py"), *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_bad_checkpoint_and_exposed_bind_are_one_line_errors(tmp_path) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    for args, says in [([f"checkpoint={junk}"], "not a checkpoint of this framework"),
                       ([f"checkpoint={junk}", "host=0.0.0.0"], "token")]:
        out = serve(*args)
        assert out.returncode == 1, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], out.stderr
