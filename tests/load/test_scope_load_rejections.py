"""A REST load against REAL Engramia 0.6.6 servers on 127.0.0.1 of records the server refuses (over the
body limit, over its task limit) and of personal data: what is refused is recorded with its reason while
the rest loads, and what is sent is redacted."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from pipelines.load.ledger import Outcome
from pipelines.load.records import kept_patterns
from pipelines.load.rest.options import RestMode
from pipelines.pairing.pairs import PairingOptions
from pipelines.tables import DataLayout
from tests.support.engramia_server import (
    SAMPLE,
    stage,
)
from tests.support.rest_load import SCOPE, ledger_state, load, opts

pytestmark = pytest.mark.server


# -- body limit, rejections, redaction -------------------------------------------------------------


def _extra_threads(dir_: Path) -> Path:
    """The sample plus three threads: a 12,000-char question (over the server's task limit), a 9,000-char
    answer (over a small body limit) and one full of personal data."""
    src = dir_ / "landing"
    src.mkdir(parents=True)
    for p in SAMPLE.glob("*.ndjson"):
        (src / p.name).write_bytes(p.read_bytes())
    rows = []

    def add(thread: str, q: str, a: str) -> None:
        for i, (role, text) in enumerate((("user", q), ("assistant", a))):
            rows.append(
                {
                    "thread_id": thread,
                    "assistant_id": "asst_extra",
                    "message_id": f"{thread}_{i}",
                    "role": role,
                    "text": text,
                    "created_at": 1_717_300_000 + i,
                }
            )

    add("thread_longtask", "Please review this log: " + "lorem ipsum " * 1_000, "It looks fine.")
    add("thread_longcode", "Generate the fixture table.", "row;" * 2_250)
    add(
        "thread_pii",
        "My email is jane.roe@example.com and my server is 10.20.30.40, call +44 20 7946 0958",
        "Use Authorization: Bearer abcdef1234567890abcdef and never share sk-abcdefghijklmnopqrstuvwx",
    )
    (src / "extra.ndjson").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return src


@pytest.fixture
def extra_layout(tmp_path) -> DataLayout:
    src = _extra_threads(tmp_path)
    return stage(
        src, tmp_path / "data", "single", PairingOptions(task_max_chars=20_000, code_max_chars=20_000)
    )


def _pid(layout: DataLayout, thread: str) -> str:
    kept = kept_patterns(layout, SCOPE).collect()
    return kept.filter(pl.col("thread_id") == thread)["pattern_id"][0]


def test_import_batch_over_the_body_limit_is_split_and_an_oversize_record_rejected(
    engramia_servers, extra_layout, api_key_env
):
    server = engramia_servers(max_body=3_000)  # the client is not told: it batches for 1 MiB
    env = api_key_env(server)
    said: list[str] = []
    result = load(extra_layout, server, env, opts(RestMode.IMPORT), log=said.append)
    assert result.error is None, result.error
    assert any("413 for 12 records; splitting the batch" in m for m in said)
    big, long_task = _pid(extra_layout, "thread_longcode"), _pid(extra_layout, "thread_longtask")
    reasons = {r["pattern_id"]: r["reason"] for r in result.rejections}
    assert set(reasons) == {big, long_task}  # the long task never left: the pipeline's validation
    assert reasons[big] == (
        "server: record of 9,571 bytes over the body limit "
        "(Request body too large. Maximum allowed: 3000 bytes.)"
    )
    assert result.stored == 11 and result.reconciles  # the 10 of the sample + the PII thread
    keys = {r["key"] for r in server.export()}
    assert len(keys) == 11 and f"patterns/{big}" not in keys
    state = ledger_state(extra_layout, server)
    assert state.filter(pl.col("pattern_id") == big)["outcome"][0] == Outcome.REJECTED

    # a re-run does not ask the server again about what it refused, and sends nothing
    again = load(extra_layout, server, env, opts(RestMode.IMPORT))
    assert again.sent == 0 and again.skipped == 1 and again.rejected == 1 and again.stored == 0

    # told the real limit, a client fills bodies under it and never sends what cannot fit
    fresh = engramia_servers(max_body=3_000)
    layout2 = DataLayout.at(extra_layout.root.parent / "data2")
    shutil.copytree(extra_layout.root, layout2.root)
    told = load(layout2, fresh, api_key_env(fresh), opts(RestMode.IMPORT, max_body_bytes=4_096))
    assert told.stored == 11 and told.rejected == 2
    assert {r["pattern_id"]: r["reason"] for r in told.rejections}[big].startswith(
        "pipeline: import record of 9,571 bytes does not fit a request body"
    )
    assert len(fresh.export()) == 11


def test_learn_422_is_recorded_with_the_servers_reason_while_the_rest_loads(
    engramia_servers, extra_layout, api_key_env
):
    engramia_server = engramia_servers()
    env = api_key_env(engramia_server)
    long_task = _pid(extra_layout, "thread_longtask")
    result = load(extra_layout, engramia_server, env, opts(RestMode.LEARN, validate=False))
    assert result.error is None, result.error
    assert result.rejected == 1
    assert result.rejections == [
        {"pattern_id": long_task, "reason": "server: task: String should have at most 10000 characters"}
    ]
    assert result.stored == 12 and result.reconciles
    state = ledger_state(extra_layout, engramia_server)
    assert state.filter(pl.col("outcome") == Outcome.REJECTED)["pattern_id"].to_list() == [long_task]

    # the pipeline's own validation (on by default) catches it before sending, in import mode too
    layout2 = DataLayout.at(extra_layout.root.parent / "data2")
    shutil.copytree(extra_layout.root, layout2.root)
    server2 = engramia_servers()
    res = load(layout2, server2, api_key_env(server2), opts(RestMode.IMPORT))
    assert res.rejected == 1 and res.rejections[0]["pattern_id"] == long_task
    assert re.fullmatch(
        r"pipeline: task has 120\d\d chars \(limit 10000\) \(server limit\)", res.rejections[0]["reason"]
    )
    assert res.sent == 12 and res.stored == 12 and len(server2.export()) == 12


def test_pii_is_redacted_in_task_and_code_in_both_modes(engramia_servers, extra_layout, api_key_env):
    pid = _pid(extra_layout, "thread_pii")
    for mode in (RestMode.IMPORT, RestMode.LEARN):
        server = engramia_servers()
        layout = DataLayout.at(extra_layout.root.parent / f"copy-{mode}")
        shutil.copytree(extra_layout.root, layout.root)
        result = load(layout, server, api_key_env(server), opts(mode, validate=True))
        assert result.error is None
        counts = json.loads(result.redactions)
        assert counts["email"] == 1 and counts["ipv4"] == 1 and counts["phone"] == 1
        assert counts["bearer"] == 1 and counts["api_key"] == 1
        [rec] = [r for r in server.export() if "[EMAIL]" in r["data"]["task"]]
        assert rec["data"]["task"] == "My email is [EMAIL] and my server is [IPV4], call [PHONE]"
        assert rec["data"]["design"]["code"] == "Use Authorization: Bearer [TOKEN] and never share [API_KEY]"
        text = json.dumps(server.export())
        assert "jane.roe@example.com" not in text and "10.20.30.40" not in text and "sk-abcdef" not in text
        if mode == RestMode.IMPORT:
            assert rec["key"] == f"patterns/{pid}"
