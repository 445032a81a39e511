"""ChatGPT data exports: only the branch that ends at ``current_node`` pairs; abandoned branches, hidden,
tool and tool-call nodes are counted with their own reasons and never staged; the same conversations pair
like the guide's NDJSON (same ids: node ids are message ids) from one file, split files or the .zip."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import polars as pl
import pytest
import zstandard

from pipelines.ingest.formats import FORMATS, detect_format, detect_head
from pipelines.ingest.formats.base import ReaderOptions, using_reader_options
from pipelines.ingest.formats.chatgpt import REASON_HIDDEN, REASON_TOOL, ChatGptExport
from pipelines.pairing import pairs
from pipelines.tools import shapes
from pipelines.tools.conversations import T0
from pipelines.tools.shapes_chat import chatgpt_conversation
from tests.ingest.chat_support import (
    assert_reconciles,
    cli_run,
    guide_pairs,
    pairs_per_thread,
    patterns,
    quarantine_reasons,
    records,
    run_shape,
    unpaired_reasons,
)

EXPORT = [chatgpt_conversation(c, i) for i, c in enumerate(shapes.conversations())]


def test_every_node_with_a_message_is_one_record_and_only_the_current_branch_is_kept() -> None:
    recs = records("chatgpt-export", EXPORT)
    nodes = [n for conv in EXPORT for n in conv["mapping"].values() if n["message"] is not None]
    assert len(recs) == len(nodes)
    assert [r["order"] for r in recs] == list(range(1, len(recs) + 1))
    by_id = {r["message_id"]: r for r in recs}
    assert by_id["m1"]["position"] == "$[0].mapping.m1.message"
    assert {k for k, r in by_id.items() if r.get("branch") == "abandoned"} == {"m2-v1", "m3-v1", "m3-v1a"}
    assert by_id["thread_ties-sys"]["quarantine"] == REASON_HIDDEN
    assert by_id["thread_two_assistants-ctx"]["quarantine"] == REASON_HIDDEN  # weight 0
    assert by_id["n2-out"]["quarantine"] == REASON_TOOL == pairs.REASON_TOOL
    assert by_id["n2-call"]["quarantine"].startswith("tool call:")
    assert by_id["m3"]["parts"] == {"images": 1} and by_id["m3"]["text"] == "Add quoting"
    assert by_id["m5"]["parts"] == {"attachments": 2}
    # The model answered the question; a question nobody answered yet gets the last model.
    assert by_id["n3"]["assistant_id"] == "asst_review" and by_id["n6"]["assistant_id"] == "asst_review"
    assert by_id["n1"]["assistant_id"] == "asst_coder"
    assert by_id["m1"]["thread_id"] == "thread_ties" and by_id["m1"]["created_at"] == float(T0)


def test_same_patterns_as_the_guide_from_one_file_split_files_and_the_zip(tmp_path: Path) -> None:
    reference = patterns(run_shape(tmp_path / "guide", "guide-ndjson"))
    columns = ["pattern_id", "thread_id", "assistant_id", "task", "code"]
    for shape in ("chatgpt-export", "chatgpt-split", "chatgpt-zip"):
        layout = run_shape(tmp_path / shape, shape)
        got = patterns(layout).select(columns).sort("pattern_id")
        assert got.equals(reference.select(columns).sort("pattern_id")), shape
        assert pairs_per_thread(layout) == guide_pairs(tmp_path / f"ref-{shape}")
        manifest = assert_reconciles(layout)
        assert set(manifest["format"]) <= {"chatgpt-export", "chatgpt-export-files"}
        # Hidden and tool nodes are skipped; abandoned edits are staged, and never pair.
        assert quarantine_reasons(layout) == {
            REASON_HIDDEN: 3,
            REASON_TOOL: 1,
            "tool call: an assistant message addressed to python": 1,
        }
        staged = pl.read_parquet(list(layout.raw().glob("dump=*/scope=*/*.parquet")))
        abandoned = staged.filter(pl.col("branch") == "abandoned")
        assert sorted(abandoned["message_id"]) == ["m2-v1", "m3-v1", "m3-v1a"]
        assert staged.height == 14
        assert unpaired_reasons(layout)[pairs.REASON_ABANDONED] == 3
        kept = patterns(layout)
        used = set(kept["user_message_ids"].explode()) | set(kept["assistant_message_ids"].explode())
        assert not used & set(abandoned["message_id"])


def test_the_zip_reads_conversations_and_counts_the_other_files(tmp_path: Path) -> None:
    layout = run_shape(tmp_path, "chatgpt-zip")
    manifest = pl.read_parquet(layout.manifest).sort("file")
    members = {
        f.rsplit("!", 1)[1]: (fmt, n) for f, fmt, n in manifest.select("file", "format", "lines").rows()
    }
    assert members == {
        "conversations.json": ("chatgpt-export", 19),
        "message_feedback.json": ("chatgpt-export-files", 0),
        "shared_conversations.json": ("chatgpt-export-files", 0),
        "user.json": ("chatgpt-export-files", 0),
    }


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_the_other_export_files_are_known_compressed_too(tmp_path: Path, suffix: str) -> None:
    body = json.dumps({"id": "user-1", "email": "a@example.com"}).encode()
    packed = {"": body, ".gz": gzip.compress(body), ".zst": zstandard.compress(body)}[suffix]
    (tmp_path / f"user.json{suffix}").write_bytes(packed)
    assert detect_format(tmp_path / f"user.json{suffix}") == "chatgpt-export-files"
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as z:
        z.writestr(f"user.json{suffix}", packed)
    assert detect_format(tmp_path / "export.zip", f"user.json{suffix}") == "chatgpt-export-files"


def test_assistant_name_replaces_the_model() -> None:
    with using_reader_options(ReaderOptions(assistant_name="my-gpt")):
        recs = records("chatgpt-export", EXPORT)
    assert {r["assistant_id"] for r in recs if r.get("branch") == "current"} == {"my-gpt"}
    assert {r["assistant_id"] for r in records("chatgpt-export", EXPORT) if r["role"] == "assistant"} == {
        "asst_coder",
        "asst_review",
    }


def test_default_model_slug_missing_times_and_unknown_current_node() -> None:
    conv = json.loads(json.dumps(EXPORT[1]))
    for node in conv["mapping"].values():
        if node["message"] and node["message"]["author"]["role"] == "assistant":
            node["message"]["metadata"].pop("model_slug", None)
    conv["mapping"]["n4"]["message"]["create_time"] = None
    recs = records("chatgpt-export", [conv])
    assert {r["assistant_id"] for r in recs if r["role"] == "assistant"} == {"asst_coder"}
    # One message of the path without a time: the conversation is ordered by the tree alone.
    assert {r["created_at"] for r in recs} == {None}
    conv["current_node"] = "nowhere"
    kept = [r["message_id"] for r in records("chatgpt-export", [conv]) if r["branch"] == "current"]
    assert kept[-1] == "n6"  # the newest branch


def test_bad_values_are_quarantined_records() -> None:
    recs = records("chatgpt-export", b'[{"id": "c", "mapping": {}}, 5, {"title": "x"}]')
    assert [r.get("quarantine") for r in recs] == [
        "not a JSON object",
        "not a ChatGPT conversation (no mapping)",
    ]
    assert recs[0]["position"] == "$[1]"


@pytest.mark.parametrize("fmt", ["chatgpt-export", "assistants-api", "openai-conversations"])
def test_a_long_quarantined_value_says_its_raw_text_was_cut(fmt: str) -> None:
    big = {"object": "thread.run", "title": "x" * 250_000}
    small = {"object": "thread.run", "title": "y"}
    recs = records(fmt, [big, small])
    raws = [r["raw"] for r in recs if r.get("quarantine")]
    assert len(raws) == 2
    whole = json.dumps(big, ensure_ascii=False)
    assert raws[0] == f"{whole[:100_000]} [cut: the first 100,000 of {len(whole):,} characters]"
    assert raws[1] == json.dumps(small, ensure_ascii=False)


def test_a_large_export_is_read_one_conversation_at_a_time() -> None:
    convs = [
        chatgpt_conversation(shapes.Conversation(f"c{i}", shapes.conversations()[0].messages), 0)
        for i in range(1500)
    ]
    data = json.dumps(convs).encode()
    assert len(data) > 4 * 1024 * 1024
    stream = io.BytesIO(data)
    first = next(iter(ChatGptExport().read(stream, "conversations.json")))
    assert first["thread_id"] == "c0"
    assert stream.tell() <= 2 * 1024 * 1024  # two read blocks, not the file


@pytest.mark.parametrize(
    "shape",
    [
        "guide-ndjson",
        "assistants-jsonl",
        "assistants-pages-desc",
        "chatgpt-export",
        "chatgpt-split",
        "chat-completions",
        "sharegpt",
    ],
)
def test_exactly_one_reader_claims_each_shape(tmp_path: Path, shape: str) -> None:
    for path in shapes.write_shape(shape, tmp_path):
        head = path.read_bytes()[:65536]
        claims = [name for name, r in FORMATS.items() if r.detect(head, path.name)]
        assert len(claims) == 1, (path.name, claims)
        assert claims == [detect_head(head, path.name)]


def test_keys_quoted_inside_texts_do_not_count() -> None:
    line = {
        "thread_id": "t",
        "assistant_id": "a",
        "message_id": "m",
        "role": "user",
        "created_at": 1,
        "text": 'see {"mapping": {}, "children": [], "conversations": [{"from": "x", "value": 1}]}',
    }
    assert detect_head(json.dumps(line).encode(), "d.ndjson") == "guide-ndjson"


def test_cli_run_of_an_export(tmp_path: Path) -> None:
    summary = cli_run(tmp_path, "chatgpt-export")
    assert summary["ok"] and summary["exit_code"] == 0, summary
    assert summary["this_run"]["lines"] == 19 and summary["this_run"]["quarantined"] == 5
    assert set(summary["scopes"]) == {"default__asst_coder", "default__asst_review"}
    assert sum(s["patterns"] for s in summary["scopes"].values()) == 4
    named = cli_run(tmp_path / "named", "chatgpt-export", "--assistant-name", "my-gpt")
    assert named["ok"] and set(named["scopes"]) == {"default__my-gpt"}, named
