"""A Dagster instance on the test session's PostgreSQL server, configured by assets/dagster.postgres.yaml."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from assets.cli.instance import INSTANCE_TEMPLATE
from tests.support.postgres_server import PostgresServer

POSTGRES_TEMPLATE = INSTANCE_TEMPLATE.with_name("dagster.postgres.yaml")


def postgres_home(home: Path, server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DAGSTER_HOME with the Postgres instance on a database of its own; its connection in the environment."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(POSTGRES_TEMPLATE, home / "dagster.yaml")
    database = server.create_database(f"dagster_{secrets.token_hex(4)}")
    for name, value in server.environment(database).items():
        monkeypatch.setenv(name, value)
    return home


@pytest.fixture
def pg_instance(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    home = postgres_home(tmp_path / "dagster_home", postgres_server, monkeypatch)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance
