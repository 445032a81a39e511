"""A REST load against Engramia 0.7.x's behaviour (the scripted server of tests/support/scripted_engramia):
near-duplicate learns answered ``stored: false`` or replacing a weaker pattern under its old key, recall
that changes what it returns, per-key rate limits, quotas and version strings that say little."""

from __future__ import annotations

import json

import polars as pl
import pytest

from assets.cli.main import build_parser
from assets.cli.summary import scope_summary
from checks.accounting import load_accounts_for_kept
from checks.loading import recall_spot_check
from pipelines.load.ledger import Ledger
from pipelines.load.plan import LOAD_TERMS, save_load_result
from pipelines.load.records import kept_ids
from pipelines.load.rest.client import EngramiaClient
from pipelines.load.rest.options import RestMode, destination_id
from pipelines.load.rest.pacing import SERVER_PER_KEY_LIMIT, Progress, duration, rollback_pace
from pipelines.load.rest.readback import NearDuplicates
from pipelines.load.rest.scope_load import load_rest
from pipelines.load.rest.server_version import parse_server_version
from pipelines.load.rest.servers import ServerConfig
from pipelines.load.rest.spot_check import spot_check_rest
from pipelines.load.rollback import rollback_rest
from tests.support.rest_load import SCOPE, expected, opts
from tests.support.scripted_engramia import Scripted07

SERVER = ServerConfig("http://engramia07.test", "SCRIPTED07_KEY")


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("SCRIPTED07_KEY", "scripted-07-key-value")


def learn(layout, fake: Scripted07, **kw):
    return load_rest(
        layout, SCOPE, "default", "default", SERVER, opts(RestMode.LEARN, **kw), transport=fake.transport()
    )


def partly_on_the_server(layout, fake: Scripted07) -> dict[str, str]:
    """Three of the kept tasks are already on the server, stored by someone else: one with a higher
    score (the learn is not stored), one with a lower score (the learn replaces it under its key), one
    identical (task and code: found, not sent)."""
    rows = expected(layout).sort("pattern_id").to_dicts()
    return {
        "higher": fake.seed(rows[0]["task"], "someone else's better answer", 9.0),
        "lower": fake.seed(rows[1]["task"], "someone else's weaker answer", 1.0),
        "same": fake.seed(rows[2]["task"], rows[2]["code"], 5.0),
    }


def test_a_learn_whose_tasks_partly_exist_accounts_for_every_pattern(staged):
    """Findings 1 and 3: not_stored is an outcome, the spot check reads back only what was stored."""
    layout, fake = staged("single"), Scripted07()
    seeded = partly_on_the_server(layout, fake)
    result = learn(layout, fake)
    assert result.error is None
    assert (result.stored, result.replaced, result.not_stored, result.present) == (7, 1, 1, 1)
    assert result.loaded == 8 and result.unaccounted == 0 and sum(result.terms().values()) == 10
    assert result.reconciles  # pattern_count moved by stored only: the replacement rewrote a key
    ledger = Ledger(layout, SCOPE, destination_id(SERVER))
    replaced = ledger.state().filter(pl.col("replaced").fill_null(False))
    assert replaced["key"].to_list() == [seeded["lower"]]
    [lost] = ledger.state().filter(pl.col("outcome") == "not_stored").iter_rows(named=True)
    assert lost["key"] is None
    assert lost["reason"].endswith(
        f"; kept instead: {seeded['higher']} (not loaded from here; word Jaccard 1.00)"
    )
    previous = json.loads(replaced["previous"][0])
    assert previous["data"]["design"]["code"] == "someone else's weaker answer"

    kept = kept_ids(layout, SCOPE)
    in_store = ledger.in_store().join(kept, on="pattern_id", how="semi").height
    assert load_accounts_for_kept(result.as_dict(), kept.height, in_store).passed
    save_load_result(layout, result, "run-07")
    summary = scope_summary(layout, SCOPE, "run-07", destination_id(SERVER))
    assert summary["load_adds_up"] and summary["loaded"] == 8 and summary["replaced"] == 1
    assert {t: summary[t] for t in LOAD_TERMS} == result.terms()

    before = fake.snapshot()
    method, hits = spot_check_rest(
        layout, SCOPE, SERVER, opts(RestMode.LEARN), result.ledger_run_id, fake.transport()
    )
    assert method == "export" and len(hits) == 8 and recall_spot_check(hits, method).passed
    assert fake.calls("/v1/recall") == 0 and fake.snapshot() == before  # finding 2

    again = learn(layout, fake)  # a re-run: nothing new, nothing sent, nothing changed
    assert again.error is None and again.sent == 0 and again.unaccounted == 0
    assert (again.already_loaded, again.skipped) == (9, 1)
    assert spot_check_rest(
        layout, SCOPE, SERVER, opts(RestMode.LEARN), again.ledger_run_id, fake.transport()
    ) == (
        "nothing stored",
        [],
    )
    assert fake.snapshot() == before


def test_without_export_a_not_stored_learn_says_the_kept_pattern_is_unknown(staged):
    layout, fake = staged("single"), Scripted07(role="editor")
    partly_on_the_server(layout, fake)
    result = learn(layout, fake)
    # Without export, the pattern identical to one on the server is not found first: sent, not stored too.
    assert result.error is None and result.not_stored == 2
    unknown = "2 not stored: the near-duplicates kept instead are unknown (the key cannot export)"
    assert unknown in result.notes


def test_the_near_duplicate_named_is_the_one_the_server_rule_matches():
    def record(task: str, score: float) -> dict:
        return {"data": {"task": task, "success_score": score}}

    long = " ".join(f"w{i}" for i in range(30))
    records = {
        "k-thanks": record("Thanks!", 5.0),
        "k-long-close": record(long + " extra", 6.0),  # 30 of 31 words: Jaccard 0.968
        "k-long-far": record(" ".join(f"w{i}" for i in range(27)), 9.0),  # 27 of 30: 0.9
        "k-tie-low": record("Sort a list in Python", 4.0),
        "k-tie-high": record("sort a LIST in python", 7.0),
    }
    server = NearDuplicates(records)
    assert server.kept_for("thanks!") == ("k-thanks", 1.0)
    assert server.kept_for("thanks") is None  # punctuation stays attached to the word
    key, similarity = server.kept_for(long)
    assert key == "k-long-close" and round(similarity, 3) == 0.968
    assert server.kept_for("SORT a list in Python") == ("k-tie-high", 1.0)
    assert server.kept_for("something else entirely") is None


def test_without_export_the_spot_check_recalls_one_pattern_at_limit_one(staged):
    """Finding 2: recall changes what it returns (0.7.x marks ~4x the limit), so it is used once."""
    layout, fake = staged("single"), Scripted07(role="editor")
    result = learn(layout, fake)
    assert result.error is None and result.stored == 10
    before = {k: r["data"]["reuse_count"] for k, r in fake.store.items()}
    method, hits = spot_check_rest(
        layout, SCOPE, SERVER, opts(RestMode.LEARN), result.ledger_run_id, fake.transport()
    )
    assert method == "recall" and len(hits) == 1 and hits[0]["found"]
    assert fake.calls("/v1/recall") == 1
    changed = [k for k, r in fake.store.items() if r["data"]["reuse_count"] != before[k]]
    assert len(changed) <= 4  # limit 1: the four candidates a 0.7.x recall fetches, no more


def test_rollback_restores_what_a_learn_replaced_and_deletes_only_its_own_keys(staged):
    """Finding 5."""
    layout, fake = staged("single"), Scripted07()
    seeded = partly_on_the_server(layout, fake)
    original = {k: json.dumps(fake.store[k], sort_keys=True) for k in seeded.values()}
    assert learn(layout, fake).replaced == 1
    said: list[str] = []
    options = opts(RestMode.LEARN)
    dry = rollback_rest(layout, SCOPE, SERVER, options, dry_run=True, transport=fake.transport())
    assert dry.as_dict()["would_restore"] == 1 and dry.as_dict()["would_delete"] == 7
    report = rollback_rest(layout, SCOPE, SERVER, options, transport=fake.transport(), say=said.append)
    out = report.as_dict()
    assert report.error is None and (out["deleted"], out["restored"], out["left_in_place"]) == (7, 1, 1)
    # the server holds exactly what it held before the load, byte for byte
    assert {k: json.dumps(v, sort_keys=True) for k, v in fake.store.items()} == original
    assert said[0].startswith(f"rollback of {SCOPE}: 9 patterns")
    assert said[-1].startswith(f"rollback of {SCOPE}: 9/9 done in ")


def test_rollback_with_an_editor_key_leaves_a_replaced_pattern_in_place_and_says_so(staged):
    layout, fake = staged("single"), Scripted07(role="editor")
    seeded = partly_on_the_server(layout, fake)
    result = learn(layout, fake)
    assert result.replaced == 1 and result.error is None
    report = rollback_rest(layout, SCOPE, SERVER, opts(RestMode.LEARN), transport=fake.transport())
    left = [i for i in report.items if i.action == "replaced: left in place"]
    assert len(left) == 1 and "restore it by hand" in left[0].note
    assert seeded["lower"] in fake.store  # the editor may delete it (it is now "its own"): it did not
    assert seeded["higher"] in fake.store and seeded["same"] in fake.store


def test_rollback_paces_itself_by_the_per_key_limit():
    """Finding 6: deletes are a new path each, so the per-key limit (120/min) sets the pace; at that pace a
    client never meets the server's 429."""
    now = [0.0]
    fake = Scripted07(per_key_limit=SERVER_PER_KEY_LIMIT, clock=lambda: now[0])

    def sleep(s: float) -> None:
        now[0] += s

    client = EngramiaClient(
        SERVER.url,
        SERVER.api_key_env,
        requests_per_minute=rollback_pace(),
        transport=fake.transport(),
        clock=lambda: now[0],
        sleep=sleep,
    )
    for i in range(300):
        client.delete_pattern(f"patterns/x_{i}")
    assert client.stats.rate_limited == 0 and now[0] == pytest.approx(299 * 0.5)
    args = build_parser().parse_args(
        ["rollback", "--scope", "s", "--engramia-url", "http://x", "--api-key-env", "K"]
    )
    assert args.requests_per_minute is None and args.server_key_limit == 120
    assert duration(5_268, rollback_pace()) == "about 44 min"
    said: list[str] = []
    progress = Progress("rollback", 3, 120, said.append, every=0)
    progress.start()
    progress.tick()
    progress.tick(2)
    # Items that needed no request pass in no time: no rate is made up from them.
    assert said == [
        "rollback: 3 patterns at 120/min, about 2 s",
        "rollback: 1/3 (120/min), about 1 s",
        said[2],
    ]
    assert said[2].startswith("rollback: 3/3 done in ")


def test_quota_errors_name_the_option_that_changes_the_outcome(staged):
    """Finding 4: the server allows 12 patterns (its ENGRAMIA_PROJECT_QUOTA_PCT 1.0 of 12)."""
    layout, fake = staged("single"), Scripted07(patterns_limit=12, quota_pct=1.0)
    refused = learn(layout, fake)
    assert refused.sent == 0 and "quota is 9" in refused.error and "--quota-pct" in refused.error
    assert refused.unaccounted == 0 and refused.failed == 10
    assert learn(layout, fake, quota_pct=1.0).stored == 10


def test_a_quota_the_server_enforces_is_reported_with_its_own_figures(staged):
    full = Scripted07(patterns_limit=10, quota_pct=0.5)  # cap 5, the pipeline told 1.0
    result = learn(staged("single"), full, quota_pct=1.0)
    assert result.stored == 5 and "holds 5 of the 5 patterns the server allows" in result.error
    assert "cannot raise it" in result.error and "ENGRAMIA_PROJECT_QUOTA_PCT" in result.error
    assert result.unaccounted == 0


@pytest.mark.parametrize("version", ["0.0.0+dev", "0.7.0rc1", "0.7.1.dev40+g9ea12fb", "0.6.6"])
def test_replacement_is_read_from_the_answer_whatever_the_version_says(staged, version):
    """Finding 7."""
    layout, fake = staged("single"), Scripted07(version=version)
    partly_on_the_server(layout, fake)
    result = learn(layout, fake)
    assert (result.replaced, result.not_stored, result.unaccounted) == (1, 1, 0)
    assert version in (result.server_version or "")


def test_version_strings():
    assert parse_server_version("0.7.0rc1").release == (0, 7, 0)
    assert parse_server_version("0.7.0rc1").pre == "rc1"
    assert parse_server_version("0.7.1.dev40+g9ea12fb").dev == 40
    assert not parse_server_version("0.0.0+dev").known
    assert "version unknown" in parse_server_version("0.0.0+dev").describe()
    assert parse_server_version("0.6.6").describe() == "0.6.6"
