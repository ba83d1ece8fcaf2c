"""Requests are checked against the checkpoint's schema before anything reaches the model."""

from __future__ import annotations

import numpy as np
import pytest

from robot_client.protocol import ProtocolError
from serving.schema import KeySpec, ObsSchema

SCHEMA = ObsSchema({"state": KeySpec((4,), "float32"), "cam": KeySpec((8, 8, 3), "uint8")}, n_obs_steps=2,
                   action_dim=2, horizon=8, n_action_steps=4, tasks=("a", "b"), instructions=("do a", "do b"))


def request(**changes):
    msg = {"type": "infer", "id": 3, "deadline_ms": 100.0, "task": 1,
           "obs": {"state": np.zeros((2, 4), np.float32), "cam": np.zeros((2, 8, 8, 3), np.uint8)}}
    msg.update(changes)
    return msg


def refused(msg) -> str:
    with pytest.raises(ProtocolError) as err:
        SCHEMA.validate(msg)
    return err.value.code


def test_a_valid_request_passes_with_its_fields() -> None:
    r = SCHEMA.validate(request(prefix=np.zeros((3, 2), np.float32), delay_steps=2))
    assert (r.id, r.task, r.deadline_ms, r.delay_steps, r.prefix.shape) == (3, 1, 100.0, 2, (3, 2))
    assert SCHEMA.validate(request(task=None, instruction="do a")).task == 0


@pytest.mark.parametrize("obs_change, code", [
    ({"state": None}, "bad_observation"),  # missing (removed below)
    ({"extra": np.zeros(1)}, "bad_observation"),
    ({"state": np.zeros((2, 4), np.float64)}, "bad_observation"),
    ({"state": np.zeros((1, 4), np.float32)}, "bad_observation"),  # n_obs_steps
    ({"state": np.full((2, 4), np.nan, np.float32)}, "bad_observation"),
    ({"state": np.full((2, 4), np.inf, np.float32)}, "bad_observation"),
    ({"cam": np.zeros((2, 8, 8, 4), np.uint8)}, "bad_observation"),
    ({"cam": [1, 2]}, "bad_observation"),
])
def test_observations_off_the_schema_are_refused(obs_change, code) -> None:
    obs = request()["obs"]
    obs.update(obs_change)
    obs = {k: v for k, v in obs.items() if v is not None}
    assert refused(request(obs=obs)) == code


@pytest.mark.parametrize("change", [
    {"id": -1}, {"id": "7"}, {"id": True}, {"deadline_ms": 0}, {"deadline_ms": 1e9}, {"task": 2}, {"task": None},
    {"task": None, "instruction": "do c"}, {"task": None, "instruction": "x" * 10_000},
    {"prefix": np.zeros((3, 3), np.float32)}, {"prefix": np.zeros((9, 2), np.float32)},
    {"prefix": np.zeros((3, 2), np.float64)}, {"prefix": np.zeros((3, 2), np.float32), "delay_steps": 4},
    {"delay_steps": 1}, {"noise": np.zeros((4, 2), np.float32)}, {"obs": "state"},
])
def test_bad_fields_are_refused(change) -> None:
    assert refused(request(**change)) in ("bad_request", "bad_observation")
