"""The LOADING process killed (SIGKILL) between its intent and the server's answer, in both REST modes,
against a REAL Engramia 0.6.6 server: the intent row is on disk before the request leaves, and a re-run
stores every pattern exactly once (read back through ``/v1/export``).

Learn runs with an editor key, which cannot export: the re-run can only find a pattern stored by the
killed run through its ``sending`` row, so a lost intent would mean a second copy."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipelines.load.ledger import IN_STORE, Outcome
from pipelines.load.rest.options import RestMode
from tests.support.crash_load import options
from tests.support.rest_load import expected, ledger_state, load

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[2]
HOLD_TIMEOUT = 120.0

# mode: (key role, write request held, ledger rows at the kill, patterns the held request carries)
CASES = {
    RestMode.LEARN: ("editor", 3, {Outcome.STORED: 2, Outcome.SENDING: 1}, 1),
    RestMode.IMPORT: ("owner", 2, {Outcome.STORED: 3, Outcome.SENDING: 3}, 3),
}


def run_until_held(data: Path, url: str, key_env: str, mode: RestMode, nth: int, when: str) -> None:
    """Start the load in its own process, wait until it holds the request, and SIGKILL it."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.crash_load",
            str(data),
            url,
            key_env,
            mode.value,
            str(nth),
            when,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], HOLD_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        assert line.strip() == f"HELD {nth}", (
            f"{line!r}\n{proc.stderr.read() if proc.poll() is not None else ''}"
        )
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("when", ["before", "after"], ids=["killed-before-sending", "killed-after-answer"])
@pytest.mark.parametrize("mode", list(CASES), ids=[m.value for m in CASES])
def test_a_killed_loader_leaves_its_intent_on_disk_and_a_rerun_stores_each_pattern_once(
    engramia_servers, staged, api_key_env, mode, when
):
    role, nth, at_kill, in_flight = CASES[mode]
    server = engramia_servers(role=role)
    layout, env = staged("single"), api_key_env(server)
    want = expected(layout)

    run_until_held(layout.root, server.url, env, mode, nth, when)
    # What the killed process left on disk: each finished request's outcome, and the intent of the held
    # one, written before it left.
    assert Counter(ledger_state(layout, server)["outcome"]) == at_kill
    stored_before = at_kill[Outcome.STORED]
    assert server.pattern_count() == stored_before + (in_flight if when == "after" else 0)

    again = load(layout, server, env, options(mode))
    assert again.error is None, again.error
    assert again.present == (in_flight if when == "after" else 0)
    assert again.stored == 10 - stored_before - again.present and again.reconciles
    state = ledger_state(layout, server)
    assert state.height == 10 and set(state["outcome"]) <= set(IN_STORE)

    if role != "owner":  # env-key auth gives one role per server: read back with an owner key
        server.kill()
        server.role = "owner"
        server.start()
    records = server.export()
    assert len(records) == 10 == server.pattern_count()
    assert Counter(r["data"]["task"] for r in records) == Counter(want["task"].to_list())  # each once
    if mode is RestMode.IMPORT:
        assert {r["key"] for r in records} == {f"patterns/{pid}" for pid in want["pattern_id"]}
