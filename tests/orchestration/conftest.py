from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A Dagster instance of its own per test (runs, partitions, sensor cursors)."""
    with dg.instance_for_test() as inst:
        yield inst
