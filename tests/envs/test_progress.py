"""envs/progress.py: a live bar at a terminal, progress lines at a steady interval into a file."""

from __future__ import annotations

import io


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_at_a_steady_interval_when_stdout_is_a_file() -> None:
    from envs.progress import EpisodeProgress

    out, clock = io.StringIO(), _Clock()
    bar = EpisodeProgress(50, "rollouts", stream=out, interval_s=10, clock=clock)
    for i in range(50):
        clock.t += 3  # an episode every 3 s: a line at most every 10 s
        bar.update(success=i % 5 != 0)
    bar.close()
    bar.close()  # a second close adds nothing
    lines = out.getvalue().splitlines()
    assert lines[0] == "rollouts: 0/50 episodes, 0 s"
    assert lines[1] == "rollouts: 4/50 episodes, 3 successes, 12 s"
    assert lines[-1] == "rollouts: 50/50 episodes, 40 successes, 150 s"
    assert len(lines) == 1 + 150 // 12 + 1  # the start, one per 12 s (4 episodes), the end


def test_bar_at_a_terminal_and_nothing_when_disabled_or_already_done() -> None:
    from envs.progress import EpisodeProgress

    tty = _Terminal()
    bar = EpisodeProgress(3, "demos lift", stream=tty, done=1)
    assert bar.mode == "bar"
    bar.update(success=True)
    bar.update(success=True)
    bar.close()
    assert "demos lift success 2/2" in tty.getvalue() and "episodes," not in tty.getvalue()
    quiet = io.StringIO()
    for kwargs in ({"enabled": False}, {"done": 3}):
        bar = EpisodeProgress(3, "x", stream=quiet, **kwargs)
        bar.update()
        bar.close()
    assert quiet.getvalue() == ""
    plain = io.StringIO()  # work without success flags (a conversion whose source has none) counts episodes
    bar = EpisodeProgress(2, "convert lerobot", stream=plain)
    bar.update()
    bar.update()
    bar.close()
    assert plain.getvalue().splitlines()[-1] == "convert lerobot: 2/2 episodes, 0 s"
