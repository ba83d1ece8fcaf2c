"""Progress of long work counted in episodes: rollout evaluation, demonstration generation, conversion.

At a terminal it is a live bar (rich) with the running success count. When stdout is not a terminal (a
log file, `make train > log`, CI) a bar would show nothing until the end, so plain lines are printed
instead: one when the work starts, then one at most every `interval_s` seconds as episodes finish, and
a last one at the end:

    rollouts: 12/50 episodes, 10 successes, 34 s
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO

LINE_INTERVAL_S = 10.0  # between two progress lines written to a file


class EpisodeProgress:
    """`update()` once per finished episode (with its success when that is counted); `close()` at the end.

    enabled=False: silent. `done`: episodes already there (a store being topped up). `stream` (default
    stdout) decides the form: a bar when it is a terminal, lines otherwise.
    """

    def __init__(self, total: int, label: str, enabled: bool = True, done: int = 0,
                 interval_s: float = LINE_INTERVAL_S, stream: IO[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.label, self.done, self.successes = int(total), label, int(done), 0
        self._initial = self.done
        self._counts_success = False
        self._stream = stream if stream is not None else sys.stdout
        self._interval, self._clock = interval_s, clock
        self._t0 = self._last_line = clock()
        self._printed_done = -1
        self._bar = self._task = None
        self.mode = "off"
        if not enabled or self.total <= self.done:
            return
        isatty = getattr(self._stream, "isatty", None)
        self.mode = "bar" if isatty is not None and isatty() else "lines"
        if self.mode == "bar":
            self._start_bar()
        else:
            self._line()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=Console(file=self._stream, force_terminal=True))
        self._task = self._bar.add_task(self.label, total=self.total, completed=self.done)
        self._bar.start()

    def _text(self) -> str:
        successes = f", {self.successes} successes" if self._counts_success else ""
        return (f"{self.label}: {self.done}/{self.total} episodes{successes}, "
                f"{self._clock() - self._t0:.0f} s")

    def _line(self) -> None:
        print(self._text(), file=self._stream, flush=True)
        self._last_line, self._printed_done = self._clock(), self.done

    def update(self, success: bool | None = None, n: int = 1) -> None:
        self.done += n
        if success is not None:
            self._counts_success = True
            self.successes += int(success)
        if self.mode == "bar":
            finished = self.done - self._initial  # in this run: the successes of earlier ones are not counted
            description = f"{self.label} success {self.successes}/{finished}" if self._counts_success else self.label
            self._bar.update(self._task, completed=self.done, description=description)
        elif self.mode == "lines" and self._clock() - self._last_line >= self._interval:
            self._line()

    def close(self) -> None:
        if self.mode == "bar":
            self._bar.stop()
        elif self.mode == "lines" and self._printed_done != self.done:
            self._line()  # the totals, unless the last line already had them
        self.mode = "off"  # a second close says nothing
