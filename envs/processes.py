"""Env worker processes, started one way for every caller: demonstration generation (data/generate.py)
and rollout workers (rollouts/worker_handle.py).

Every worker process is
- *spawned* (a fresh interpreter): a forked child inherits the parent's OpenGL/EGL state and crashes;
- single-threaded in OpenMP/BLAS (WORKER_THREAD_VARS, unless the user set them): workers step
  single-threaded physics, and idle thread pools in each of them spin and steal CPU. The variables are
  in the child's environment from its first instruction, before numpy or torch is imported;
- started without re-importing the parent's `__main__` script, unless the worker needs something
  defined there: the script's imports (torch, Hydra, Lightning) cost seconds and hundreds of MB per worker;
- deaf to SIGINT: Ctrl-C at a terminal reaches the whole process group, and the parent is the one
  that handles it, by closing its workers;
- tied to its parent (Linux): it gets SIGTERM when the thread that started it ends, so a parent killed
  outright leaves no simulator running;
- quiet at the end: a closed pipe (EOF, broken pipe, reset) ends it without a traceback.

A worker runs `target(conn, *args)`; `conn` is its end of a duplex pipe, and closing the parent's end
is how the parent tells it to stop.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from multiprocessing import resource_tracker
from typing import Any

WORKER_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
SPAWN = mp.get_context("spawn")
PIPE_CLOSED = (EOFError, BrokenPipeError, ConnectionResetError)
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def needs_main(ref: Any) -> bool:
    """Whether a worker using `ref` (a callable, or a "module:function" string) needs the parent's
    `__main__` module, which spawned children can only get by re-running the main script."""
    if isinstance(ref, str):
        return ref.partition(":")[0] == "__main__"
    return getattr(ref, "__module__", None) == "__main__"


@contextlib.contextmanager
def _main_hidden(hide: bool) -> Iterator[None]:
    # A spawned child re-imports whatever sys.modules["__main__"] names; an empty stand-in names nothing.
    main = sys.modules.get("__main__")
    if not hide or main is None:
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    added = [k for k in WORKER_THREAD_VARS if k not in os.environ]
    for k in added:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """SIGINT blocked in this thread while a child starts: the child inherits the block, so a Ctrl-C
    cannot raise KeyboardInterrupt in its start-up code before it ignores SIGINT, and this process gets
    the signal when the block is lifted (nothing is lost)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # Started on first use, the resource tracker un-blocks SIGINT in this thread afterwards: start it first.
    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(0)


def _child_main(target: Callable[..., Any], conn: Any, args: tuple, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # also drops a Ctrl-C that came while starting
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with_parent(parent_pid)
    try:
        target(conn, *args)
    except PIPE_CLOSED:
        pass  # the parent closed its end or died: there is nobody left to answer


class EnvProcess:
    """One spawned worker running `target(conn, *args)`, and this side of its pipe.

    uses: what the worker will look up by reference besides `target` and `args` (e.g. an env factory
    named by a string); the main script is re-run in the child only when one of them lives in it.
    """

    def __init__(self, target: Callable[..., Any], args: Sequence[Any] = (), uses: Any = None) -> None:
        self.conn, child = SPAWN.Pipe(duplex=True)
        self.proc = SPAWN.Process(target=_child_main, args=(target, child, tuple(args), os.getpid()),
                                  daemon=True)
        hide = not any(needs_main(ref) for ref in (target, uses, *args))
        try:
            with _single_threaded_children(), _sigint_deferred(), _main_hidden(hide):
                self.proc.start()
        except BaseException:
            self.conn.close()
            raise
        finally:
            child.close()  # so that this side sees EOF when the worker dies

    @property
    def sentinel(self) -> int:
        return self.proc.sentinel

    def is_alive(self) -> bool:
        return self.proc.is_alive()

    def send(self, msg: Any) -> bool:
        """False when the worker is gone (its exit is then reported by whoever waits on it)."""
        try:
            self.conn.send(msg)
            return True
        except (OSError, EOFError):
            return False

    def poll(self) -> tuple[bool, Any] | None:
        """(True, message) when the worker has answered, (False, how it ended) when it died, None while it
        works (alive, nothing to read)."""
        if self.conn.poll():
            try:
                return True, self.conn.recv()
            except (OSError, EOFError):
                pass
        elif self.proc.is_alive():
            return None
        return False, self.exit_reason()

    def exit_reason(self) -> str:
        """How the (dead) worker ended, e.g. "was killed by signal 11" or "exited with code 3"."""
        self.proc.join(timeout=5)
        code = self.proc.exitcode
        return f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)

    def close(self, timeout_s: float = 10.0) -> None:
        close_all([self], timeout_s)


def close_all(processes: Sequence[EnvProcess], timeout_s: float = 10.0) -> None:
    """Stop workers: close their pipes (each ends at EOF, once the request in hand is done), give them
    `timeout_s` seconds together to exit, and kill the rest."""
    for p in processes:
        p.conn.close()
    deadline = time.monotonic() + timeout_s
    for p in processes:
        p.proc.join(max(0.0, deadline - time.monotonic()))
        p.kill()


# --- a pool of workers for independent jobs (demonstration generation) ----------------------------
INTERRUPTED_CLOSE_S = 2.0  # an interrupted pool does not wait for the jobs in hand


def serve_calls(conn: Any, fn: Callable[[Any], Any]) -> None:
    """Worker loop of `map_in_processes`: reply ("ok", fn(item)) or ("error", (exception, traceback))."""
    while True:
        item = conn.recv()
        try:
            reply = ("ok", fn(item))
        except Exception as err:
            reply = ("error", _portable(err))
        conn.send(reply)


def _portable(err: Exception) -> tuple[Exception, str]:
    import pickle
    import traceback

    text = "".join(traceback.format_exception(err)).rstrip()
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:  # an exception that does not survive pickling crosses as its message
        err = RuntimeError(f"{type(err).__name__}: {err}")
    return err, text


def map_in_processes(fn: Callable[[Any], Any], items: Sequence[Any], workers: int,
                     describe: Callable[[Any], str] = repr, timeout_s: float | None = None,
                     on_lost: Callable[[Any, str], Any] | None = None) -> Iterator[Any]:
    """fn(item) for every item in `workers` EnvProcesses, yielded in the order of `items`.

    Each job goes to the next idle worker; at most 2 * workers finished results wait for an earlier,
    slower job. A job's exception is raised here (its worker traceback as a note). A worker that dies, or
    that has not answered `timeout_s` seconds after it got its job (it is then killed), loses its job:
    with `on_lost`, on_lost(item, message) stands in for that job's result and a fresh worker takes its
    place; without, RuntimeError(message) is raised. The message names the job (`describe(item)`). The
    workers are closed when the iterator ends, fails or is closed.
    """
    from multiprocessing.connection import wait

    items = list(items)
    procs = [EnvProcess(serve_calls, (fn,)) for _ in range(min(int(workers), len(items)))]
    busy: dict[int, tuple[int, float]] = {}  # worker slot -> (index of its job, deadline)
    done: dict[int, Any] = {}
    next_job = next_out = 0
    try:
        while next_out < len(items):
            for slot, p in enumerate(procs):
                if slot not in busy and next_job < min(len(items), next_out + 2 * len(procs)):
                    p.send(items[next_job])
                    busy[slot] = next_job, time.monotonic() + (timeout_s if timeout_s is not None else float("inf"))
                    next_job += 1
            first_deadline = min(d for _, d in busy.values())
            wait([procs[s].conn for s in busy] + [procs[s].sentinel for s in busy],
                 timeout=None if first_deadline == float("inf") else max(0.0, first_deadline - time.monotonic()))
            for slot, (i, deadline) in list(busy.items()):
                got = procs[slot].poll()
                if got is None and time.monotonic() >= deadline:
                    procs[slot].kill()
                    got = False, f"stopped answering (no reply within {timeout_s:g} s)"
                if got is None:
                    continue
                answered, reply = got
                del busy[slot]
                if not answered:
                    message = f"a worker process {reply} while running {describe(items[i])}"
                    if on_lost is None:
                        raise RuntimeError(message)
                    procs[slot].close(timeout_s=0)
                    procs[slot] = EnvProcess(serve_calls, (fn,))
                    done[i] = on_lost(items[i], message)
                    continue
                kind, payload = reply
                if kind == "error":
                    err, text = payload
                    err.add_note(f"raised in a worker process, running {describe(items[i])}:\n{text}")
                    raise err
                done[i] = payload
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
    except BaseException:
        close_all(procs, INTERRUPTED_CLOSE_S)
        raise
    close_all(procs)
