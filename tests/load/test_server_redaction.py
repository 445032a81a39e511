"""Learn look-ups compare the code sent with the code the server stored after its own redaction
(engramia's redaction pipeline, run here): when that code cannot be loaded the scope fails with a
clear error instead of missing the pattern and sending it a second time."""

from __future__ import annotations

import sys

import pytest

from pipelines.load.ledger import Ledger, Outcome
from pipelines.load.rest import readback
from pipelines.load.rest.options import RestMode, destination_id
from pipelines.load.rest.readback import LearnMatcher, ServerRedactionUnavailable
from pipelines.load.rest.servers import ServerConfig
from tests.conftest import msg, write_ndjson
from tests.support.engramia_server import stage
from tests.support.rest_load import SCOPE, ledger_state, load, opts

ANSWER = 'db = connect(password = "hunter2secret")'  # the server redacts it, the pipeline does not


@pytest.fixture
def no_server_redaction(monkeypatch):
    """The import of engramia's redaction code fails (a None entry in sys.modules makes it raise)."""
    monkeypatch.setattr(readback, "_SERVER_REDACTION", None)
    monkeypatch.setitem(sys.modules, readback.SERVER_REDACTION_MODULE, None)


def test_a_look_up_finds_a_pattern_the_server_stored_redacted():
    row = {"task": "connect to the db", "code": ANSWER}
    stored = readback.server_redacted_code(ANSWER)
    assert stored != ANSWER
    index = {"connect to the db": [("patterns/abc_1", stored, 1.0)]}
    assert LearnMatcher.find_in_index(index, row, set()) == "patterns/abc_1"


def test_without_the_server_redaction_a_look_up_fails_loudly(no_server_redaction):
    index = {"connect to the db": [("patterns/abc_1", 'db = connect(password = "[REDACTED]")', 1.0)]}
    with pytest.raises(ServerRedactionUnavailable, match=r"engramia\.governance\.redaction"):
        LearnMatcher.find_in_index(index, {"task": "connect to the db", "code": ANSWER}, set())


@pytest.mark.server
def test_an_interrupted_learn_is_not_sent_twice_when_the_redaction_code_is_missing(
    engramia_server, api_key_env, tmp_path, monkeypatch
):
    source = tmp_path / "landing"
    write_ndjson(
        source / "dump.ndjson",
        [msg("t1", "u1", "user", "connect to the db", 0), msg("t1", "a1", "assistant", ANSWER, 1)],
    )
    layout = stage(source, tmp_path / "data")
    server = engramia_server
    env = api_key_env(server)
    first = load(layout, server, env, opts(RestMode.LEARN, redact=False))
    assert first.error is None and first.stored == 1 and server.pattern_count() == 1
    [stored] = server.export()
    assert stored["data"]["design"]["code"] != ANSWER  # redacted by the server
    # An interrupted run: the intent is the pattern's last ledger row.
    ledger = Ledger(layout, SCOPE, destination_id(ServerConfig(server.url, env)))
    ledger.record(ledger_state(layout, server)["pattern_id"][0], None, Outcome.SENDING, "rest-learn")
    ledger.flush()

    with monkeypatch.context() as m:
        m.setattr(readback, "_SERVER_REDACTION", None)
        m.setitem(sys.modules, readback.SERVER_REDACTION_MODULE, None)
        with pytest.raises(ServerRedactionUnavailable, match="nothing is sent again"):
            load(layout, server, env, opts(RestMode.LEARN, redact=False))
    assert server.pattern_count() == 1  # nothing sent

    again = load(layout, server, env, opts(RestMode.LEARN, redact=False))
    assert again.error is None and again.present == 1 and again.stored == 0 and server.pattern_count() == 1
