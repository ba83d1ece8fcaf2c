"""Runs tests/kernels/triton_cases.py in a child pytest under TRITON_INTERPRET=1.

The interpreter flag must be set before triton is first imported and would change every later
Triton kernel of this session, so the cases get a process of their own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]


def test_triton_kernels_match_their_twins_in_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", KERNELS_TEST_DEVICE="cpu", PYTHONPATH=str(ROOT))
    env.pop("KERNELS_BACKEND", None)
    cmd = [sys.executable, "-m", "pytest", "tests/kernels/triton_cases.py", "-x", "--noconftest",
           "-p", "no:cacheprovider", "-o", "python_files=triton_cases.py"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    # The module skips itself when the flag did not reach it: make sure the cases really ran.
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 10, proc.stdout[-2000:]
