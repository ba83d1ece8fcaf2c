"""The robot-side action queue and scheduler: timestamps, late drops, request thresholds, transitions."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from robot_client import ActionQueue, ActionScheduler


def chunk(value: float, n: int = 4) -> np.ndarray:
    return np.full((n, 2), value, np.float32) + np.arange(n, dtype=np.float32)[:, None] / 100


def test_late_actions_are_dropped_never_executed() -> None:
    q = ActionQueue(2)
    q.merge(chunk(1.0, 6), 0, 0, "switch")
    assert q.pop(0)[0] == pytest.approx(1.0)
    assert q.pop(3)[0] == pytest.approx(1.03)  # steps 1 and 2 passed unexecuted
    assert q.dropped_late == 2 and len(q.remaining(4)) == 2
    assert q.pop(10) is None and len(q.remaining(10)) == 0


def test_transitions_take_over_at_the_arrival_step() -> None:
    for mode in ("switch", "rtc", "blend"):
        q = ActionQueue(2)
        q.merge(chunk(0.0, 8), 0, 0, "switch")
        q.merge(chunk(1.0, 8), 2, 4, mode)  # asked at step 2, answer usable from step 4
        assert np.allclose(q.remaining(0)[:4, 0], [0.0, 0.01, 0.02, 0.03])  # before arrival: the old chunk
        new = q.remaining(4)
        if mode == "blend":  # old (steps 4..7) fades out linearly over the overlap, new (from its index 2) fades in
            w = np.array([4, 3, 2, 1]) / 5
            assert np.allclose(new[:4, 0], w * chunk(0.0, 8)[4:, 0] + (1 - w) * chunk(1.0, 8)[2:6, 0])
            assert np.allclose(new[4:, 0], chunk(1.0, 8)[6:, 0])
        else:
            assert np.allclose(new[:, 0], chunk(1.0, 8)[2:, 0])


def test_a_gap_before_the_new_chunk_holds_the_last_old_action() -> None:
    q = ActionQueue(2)
    q.merge(chunk(0.0, 2), 0, 0, "switch")
    q.merge(chunk(1.0, 8), 0, 5, "switch")  # asked at step 0, usable from step 5; the old ends at step 1
    assert q.pop(3)[0] == pytest.approx(0.01)  # steps 2..4: the robot holds
    assert q.pop(5)[0] == pytest.approx(1.05) and q.pop(7)[0] == pytest.approx(1.07)
    assert q.pop(8) is None


class FakeClient:
    """A synchronous stand-in for PolicyClient: answers chunk(k) for the k-th request; records each call."""

    def __init__(self, rtc: bool = True) -> None:
        self.metadata = {"control_rate_hz": 10.0, "action_dim": 2, "n_action_steps": 6, "max_prefix": 6, "rtc": rtc}
        self.calls: list[dict] = []
        self.gate = threading.Event()
        self.gate.set()

    def infer(self, obs, **kwargs):
        self.gate.wait(5)
        self.calls.append(kwargs)
        return chunk(float(len(self.calls)), 6)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(scheduler: ActionScheduler, clock: Clock, steps: int, client: FakeClient, wait: bool = True) -> list:
    out = []
    for _ in range(steps):
        out.append(scheduler.act({"state": np.zeros((2, 4), np.float32)}))
        if wait and scheduler._in_flight is not None:
            scheduler._in_flight.join(5)
        clock.now += 0.1
    return out


def test_first_chunk_then_requests_below_the_threshold() -> None:
    client, clock = FakeClient(), Clock()
    s = ActionScheduler(client, transition="switch", threshold=2, clock=clock)
    actions = run(s, clock, 4, client)
    assert len(client.calls) == 1 and [a[0] for a in actions] == pytest.approx([1.0, 1.01, 1.02, 1.03])
    actions = run(s, clock, 1, client)  # 2 left after step 4's pop... the request goes out at step 4
    assert len(client.calls) == 2 and client.calls[1]["prefix"] is None


def test_rtc_requests_carry_the_committed_prefix_and_delay() -> None:
    client, clock = FakeClient(), Clock()
    s = ActionScheduler(client, transition="rtc", threshold=3, clock=clock)
    run(s, clock, 4, client)
    call = client.calls[-1]
    assert call["prefix"] is not None and len(call["prefix"]) == 3  # the old chunk's actions from the request's step
    assert call["prefix"][0, 0] == pytest.approx(1.03) and call["delay_steps"] == s.delay_steps() <= 3


def test_hold_repeats_the_last_action_while_no_chunk_arrives() -> None:
    client, clock = FakeClient(), Clock()
    s = ActionScheduler(client, transition="switch", threshold=0, clock=clock)
    run(s, clock, 6, client)
    client.gate.clear()  # the server stops answering
    held = run(s, clock, 3, client, wait=False)
    assert all(np.array_equal(a, held[0]) for a in held) and held[0][0] == pytest.approx(1.05)
    client.gate.set()
    s._in_flight.join(5)
    fresh = run(s, clock, 1, client)[0]
    assert fresh[0] > 1.5  # the next chunk took over; its missed steps were dropped as late


def test_rtc_needs_a_server_that_takes_a_prefix() -> None:
    with pytest.raises(ValueError, match="blend"):
        ActionScheduler(FakeClient(rtc=False), transition="rtc")


def test_simulated_delay_executes_the_old_chunk_then_measures_the_boundary_jump() -> None:
    from rollouts.latency import LatencySim

    sim = LatencySim(delay_steps=1, transition="switch", n_action_steps=4)
    first = sim.actions(0, np.zeros((4, 2), np.float32))  # the robot waits for its first chunk (no delay)
    second = sim.actions(0, np.ones((4, 2), np.float32))  # asked at step 3 with one action left; takes over at 4
    third = sim.actions(0, np.full((4, 2), 5.0, np.float32))  # asked at step 6, takes over at step 7
    assert len(first) == len(second) == len(third) == 3
    assert second[0, 0] == 0.0 and np.all(second[1:] == 1.0)  # step 3: the old chunk's last action
    assert third[0, 0] == 1.0 and np.all(third[1:] == 5.0)
    s = sim.summary()
    assert s["boundary_jump_max"] == 4.0 and s["boundary_jump_p50"] == 2.5 and s["within_chunk_p99"] == 0.0


def test_a_shorter_execution_horizon_gives_blend_an_overlap() -> None:
    from rollouts.latency import LatencySim

    runs = {}
    for mode in ("switch", "blend"):
        sim = LatencySim(delay_steps=1, transition=mode, n_action_steps=3)  # chunks of 4; rounds of 3 - 1 steps
        sim.actions(0, np.zeros((4, 2), np.float32))  # steps 0, 1 (the first chunk is waited for)
        runs[mode] = sim.actions(0, np.ones((4, 2), np.float32))  # asked at step 2, takes over at step 3
    # step 2 is the old chunk's; at step 3 switch takes the new one, blend mixes it with the old chunk's step 3
    assert np.allclose(runs["switch"][:, 0], [0.0, 1.0])
    assert np.allclose(runs["blend"][:, 0], [0.0, 0.5])
