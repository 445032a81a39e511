"""Fixtures that run the REAL Engramia REST server (the installed ``engramia`` 0.6.6 package, uvicorn) on
127.0.0.1, one process per server, and stage the demo sample without loading it.

    ENGRAMIA_SKIP_AUTO_APP=1 ENGRAMIA_STORAGE=json ENGRAMIA_DATA_PATH=<tmp> ENGRAMIA_AUTH_MODE=env
    ENGRAMIA_API_KEYS=<key> ENGRAMIA_EMBEDDING_MODEL=none ENGRAMIA_LLM_PROVIDER=none
    <venv>/bin/uvicorn engramia.api.app:create_app --factory --host 127.0.0.1 --port <port>

A server is ready when ``GET /v1/health`` answers 200 with the bearer key. It can be killed (SIGKILL)
and started again on the same data path and port; every server is terminated at teardown. Servers get
high rate limits unless a test asks for low ones, and compile their bytecode into a shared cache
directory outside the virtualenv (this test process may run with PYTHONDONTWRITEBYTECODE), which
halves their start time after the first.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from pipelines.ingest.catalog import read_scopes
from pipelines.ingest.messages import stage_messages
from pipelines.ingest.staging import ingest
from pipelines.pairing.batches import pair_scope
from pipelines.pairing.pairs import PairingOptions
from pipelines.scopes import ScopeBy, ScopeMapping
from pipelines.scoring.options import ScoringOptions
from pipelines.scoring.scores import score_scope
from pipelines.tables import DataLayout

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
UVICORN = Path(sys.executable).with_name("uvicorn")
PYCACHE = Path(tempfile.gettempdir()) / "assistants-backfill-test-pycache"
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EngramiaServer:
    """One real server process. ``api_key`` is a random test key (never a real secret)."""

    data_path: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    api_key: str = field(default_factory=lambda: f"ebk_test_{secrets.token_hex(16)}")
    role: str = "owner"
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENGRAMIA_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(
            PYTHONPYCACHEPREFIX=str(PYCACHE),
            ENGRAMIA_SKIP_AUTO_APP="1",
            ENGRAMIA_STORAGE="json",
            ENGRAMIA_DATA_PATH=str(self.data_path),
            ENGRAMIA_AUTH_MODE="env",
            ENGRAMIA_API_KEYS=self.api_key,
            ENGRAMIA_EMBEDDING_MODEL="none",
            ENGRAMIA_LLM_PROVIDER="none",
            ENGRAMIA_ENV_AUTH_ROLE=self.role,
            ENGRAMIA_RATE_LIMIT_DEFAULT="100000",
            ENGRAMIA_RATE_LIMIT_PER_KEY="100000",
            ENGRAMIA_JOB_POLL_INTERVAL="0.2",
        )
        env.update(self.env)
        return env

    def start(self) -> EngramiaServer:
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.data_path.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = self.log_path.open("ab")
        cmd = [
            str(UVICORN),
            "engramia.api.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        self.proc = subprocess.Popen(
            cmd, env=self.server_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        headers = {"Authorization": f"Bearer {self.api_key}"}
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"engramia server exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v1/health", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"engramia server not ready after {START_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, like a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> EngramiaServer:
        self.kill()
        return self.start()

    # direct reads for assertions (bypassing the code under test)

    def _get(self, path: str) -> dict:
        r = httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.api_key}"}, timeout=30)
        r.raise_for_status()
        return r.json()

    def export(self) -> list[dict]:
        return self._get("/v1/export")["records"]

    def pattern_count(self) -> int:
        return int(self._get("/v1/metrics")["pattern_count"])


class ServerFactory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[EngramiaServer] = []

    def __call__(
        self,
        role: str = "owner",
        *,
        rate_limit: int | None = None,
        max_body: int | None = None,
        env: dict[str, str] | None = None,
        start: bool = True,
    ) -> EngramiaServer:
        n = len(self.servers)
        extra = dict(env or {})
        if rate_limit is not None:
            extra["ENGRAMIA_RATE_LIMIT_DEFAULT"] = str(rate_limit)
        if max_body is not None:
            extra["ENGRAMIA_MAX_BODY_SIZE"] = str(max_body)
        server = EngramiaServer(self.root / f"server{n}", self.root / f"server{n}.log", role=role, env=extra)
        self.servers.append(server)
        return server.start() if start else server

    def close(self) -> None:
        for server in self.servers:
            try:
                server.stop()
            except Exception:
                server.kill()


@pytest.fixture
def engramia_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start servers with ``engramia_servers(role=..., rate_limit=..., max_body=...)``; all are
    terminated at teardown."""
    PYCACHE.mkdir(parents=True, exist_ok=True)
    factory = ServerFactory(tmp_path_factory.mktemp("engramia"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def engramia_server(engramia_servers: ServerFactory) -> EngramiaServer:
    """One admin-capable (owner) server."""
    return engramia_servers()


@pytest.fixture
def api_key_env(monkeypatch: pytest.MonkeyPatch) -> callable:
    """``api_key_env(server)`` puts the server's key in a fresh environment variable and returns its NAME."""
    counter = iter(range(1000))

    def _set(server: EngramiaServer, key: str | None = None) -> str:
        name = f"ENGRAMIA_TEST_KEY_{os.getpid()}_{next(counter)}"
        monkeypatch.setenv(name, key if key is not None else server.api_key)
        return name

    return _set


# -- staged sample data (no Dagster, no load) ------------------------------------------------------


def stage(
    source: Path, data_dir: Path, scope_by: str = "single", pairing: PairingOptions | None = None
) -> DataLayout:
    """Ingest, stage, pair and score like the asset chain does, up to (not including) the load."""
    layout = DataLayout.at(data_dir)
    ingest(layout, source, ScopeMapping(scope_by=ScopeBy(scope_by)), 1 << 20, lambda _m: None)
    for scope in read_scopes(layout)["scope"].to_list():
        stage_messages(layout, scope)
        pair_scope(layout, scope, pairing or PairingOptions())
        score_scope(layout, scope, ScoringOptions())
    return layout


@pytest.fixture(scope="session")
def staged_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("staged-templates")
    return {by: stage(SAMPLE, root / by, by).root for by in ("single", "assistant")}


@pytest.fixture
def staged(staged_templates: dict[str, Path], tmp_path: Path) -> callable:
    """``staged("single" | "assistant")``: a fresh copy of the staged demo sample (a DataLayout)."""

    def _copy(scope_by: str = "single") -> DataLayout:
        target = tmp_path / f"data-{scope_by}"
        shutil.copytree(staged_templates[scope_by], target)
        return DataLayout.at(target)

    return _copy
