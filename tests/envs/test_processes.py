"""envs/processes.py: how env workers are started, how they end, and the ordered job pool."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from envs import processes
from envs.processes import EnvProcess, map_in_processes
from tests.envs import process_targets

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux")


def test_worker_settings_and_quiet_end(monkeypatch, capfd) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # a user's own setting is kept
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    handler = signal.getsignal(signal.SIGINT)
    p = EnvProcess(process_targets.report)
    got = p.conn.recv()
    assert got["threads"] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "3"}
    assert got["sigint_ignored"] and not got["sigint_blocked"]
    assert got["pdeathsig"] == signal.SIGTERM
    assert got["main_file"] is None  # pytest's __main__ was not re-imported in the child
    # This process is as it was: no variable left behind, SIGINT neither blocked nor re-handled.
    assert "OMP_NUM_THREADS" not in os.environ
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask and signal.getsignal(signal.SIGINT) is handler
    p.close(timeout_s=10)
    assert p.proc.exitcode == 0  # EOF ended it, without a traceback
    assert "Traceback" not in capfd.readouterr().err


def test_needs_main() -> None:
    assert processes.needs_main("__main__:make_env") and not processes.needs_main("envs.factory:make_env")
    assert not processes.needs_main(process_targets.square)


def test_map_in_processes_keeps_the_order_and_reports_failures() -> None:
    assert list(map_in_processes(process_targets.square, range(7), workers=2)) == [i * i for i in range(7)]
    with pytest.raises(ValueError, match="boom in a job") as err:
        list(map_in_processes(process_targets.square, [1, "boom", 2], workers=2))
    assert any("running 'boom'" in note and "Traceback" in note for note in err.value.__notes__)
    with pytest.raises(RuntimeError, match="a worker process exited with code 7 while running job die"):
        list(map_in_processes(process_targets.square, [1, "die"], workers=1, describe=lambda x: f"job {x}"))


def test_a_worker_that_dies_or_stops_answering_loses_its_job_and_never_hangs_the_caller() -> None:
    import time

    t0 = time.monotonic()
    got = list(map_in_processes(process_targets.square, [1, "hang", 2, "die", 3], workers=2, timeout_s=3,
                                describe=lambda x: f"job {x}", on_lost=lambda item, why: ("lost", item, why)))
    assert got[0] == 1 and got[2] == 4 and got[4] == 9  # the other jobs, in order, on replacement workers
    assert got[1] == ("lost", "hang", "a worker process stopped answering (no reply within 3 s) while running job hang")
    assert got[3] == ("lost", "die", "a worker process exited with code 7 while running job die")
    with pytest.raises(RuntimeError, match="stopped answering .no reply within 1 s. while running 'hang'"):
        list(map_in_processes(process_targets.square, ["hang"], workers=1, timeout_s=1))
    assert time.monotonic() - t0 < 60  # the hanging jobs (120 s) were cut off
