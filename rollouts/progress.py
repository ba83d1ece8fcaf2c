"""The rollout progress bar (rich), with the running success count."""

from __future__ import annotations

from typing import Any


class Progress:
    """A rich progress bar with the running success count (silent when disabled)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar = None
        self._n_success = self._n_done = 0
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("rollouts {task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn())
            self._task = self._bar.add_task("", total=total)
            self._bar.start()

    def advance(self, record: dict[str, Any]) -> None:
        self._n_done += 1
        self._n_success += int(record["success"])
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=f"success {self._n_success}/{self._n_done}")

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
