"""Fixtures of the converter tests: a few real Lift demonstrations from our scripted expert."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def lift_store(tmp_path_factory):
    """3 expert Lift episodes (state only, ~40 steps each, with flat simulator states); read-only for tests."""
    from data.generate import generate

    return generate("lift", 3, str(tmp_path_factory.mktemp("lift") / "lift.zarr"), workers=0, progress=False)
