"""The ChatGPT export rows. ``chatgpt_export``: the transform row's messages as a ChatGPT export
(``conversations.json``, one conversation per thread, a hidden system node each, model slugs as
assistants), timed against the same messages as the guide's NDJSON; target: at most twice the NDJSON's
wall time. ``cli_chatgpt_1m``: the same export through the CLI, against the core path on it.

The export is made once from the synthetic NDJSON (its valid user and assistant lines, each thread in
its order) and kept in ``benchmarks/work/``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from benchmarks.bench_doors import cli_command, core_then_cli, shown
from benchmarks.inputs import fresh, made_once, size, size_label, synth
from benchmarks.measure import Measured, measure, worker_command
from benchmarks.paths import WORK
from benchmarks.repeats import median, spread
from benchmarks.report import Row

TARGET_RATIO = 2.0


def _conversation(thread_id: str, rows: list[tuple]) -> dict:
    root, system = f"{thread_id}-root", f"{thread_id}-sys"
    mapping: dict[str, dict] = {
        root: {"id": root, "message": None, "parent": None, "children": [system]},
        system: {
            "id": system,
            "message": {
                "id": system,
                "author": {"role": "system"},
                "create_time": None,
                "content": {"content_type": "text", "parts": [""]},
                "weight": 0.0,
                "metadata": {"is_visually_hidden_from_conversation": True},
                "recipient": "all",
            },
            "parent": root,
            "children": [],
        },
    }
    parent = system
    for assistant_id, message_id, role, text, created_at in rows:
        mapping[parent]["children"].append(message_id)
        mapping[message_id] = {
            "id": message_id,
            "message": {
                "id": message_id,
                "author": {"role": role, "name": None, "metadata": {}},
                "create_time": float(created_at),
                "content": {"content_type": "text", "parts": [text]},
                "status": "finished_successfully",
                "weight": 1.0,
                "metadata": {"model_slug": assistant_id} if role == "assistant" else {},
                "recipient": "all",
            },
            "parent": parent,
            "children": [],
        }
        parent = message_id
    return {
        "title": thread_id,
        "create_time": float(rows[0][4]),
        "mapping": mapping,
        "current_node": parent,
        "id": thread_id,
        "conversation_id": thread_id,
        "default_model_slug": rows[0][0],
    }


def chatgpt_export(source: Path, out: Path) -> Path:
    """``source``'s threads as a ChatGPT export, written once, conversation by conversation."""
    return made_once(
        out, ["benchmarks.bench_chatgpt", str(source), str(out)], f"converting {source.name} into {out.name}"
    )


def _convert(source: Path, out: Path) -> None:
    import duckdb

    out.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    query = con.execute(f"""
        WITH lines AS (
            SELECT *, row_number() OVER () AS ln FROM read_json('{source}', format = 'newline_delimited',
                ignore_errors = true, columns = {{thread_id: 'VARCHAR', assistant_id: 'VARCHAR',
                message_id: 'VARCHAR', role: 'VARCHAR', text: 'VARCHAR', created_at: 'BIGINT'}})
        )
        SELECT thread_id, assistant_id, message_id, role, text, created_at FROM lines
        WHERE thread_id IS NOT NULL AND message_id IS NOT NULL AND assistant_id IS NOT NULL
            AND text IS NOT NULL AND created_at IS NOT NULL AND role IN ('user', 'assistant')
        QUALIFY row_number() OVER (PARTITION BY message_id ORDER BY ln) = 1
        ORDER BY thread_id, created_at, ln
        """)
    with out.open("w", encoding="utf-8") as f:
        f.write("[")
        first, thread, rows = True, None, []
        while batch := query.fetchmany(50_000):
            for row in batch:
                if row[0] != thread and rows:
                    f.write(("" if first else ",\n") + json.dumps(_conversation(thread, rows)))
                    first, rows = False, []
                thread = row[0]
                rows.append(row[1:])
        if rows:
            f.write(("" if first else ",\n") + json.dumps(_conversation(thread, rows)))
        f.write("]\n")
    con.close()


def bench_chatgpt(messages: int, repeats: int) -> Row:
    label = size_label(messages)
    source = synth(WORK / f"m{label}.ndjson", messages)
    export = chatgpt_export(source, WORK / f"chatgpt-{label}" / "conversations.json")
    runs: dict[str, list[Measured]] = {"ndjson": [], "chatgpt": []}
    for _ in range(repeats):
        for kind, path in (("ndjson", source), ("chatgpt", export)):
            data = fresh(WORK / f"data-chatgpt-{kind}-{label}")
            runs[kind].append(measure("backfill", source=str(path), data=str(data), load=False))
            shutil.rmtree(data)
    ndjson, chatgpt = (median(r, key=lambda m: m.wall) for r in runs.values())
    ratio = chatgpt.wall / ndjson.wall

    return Row(
        name="chatgpt_export",
        title=f"{label} messages as a ChatGPT export vs the same as NDJSON (transform, no load)",
        input=f"{export.name} ({size(export)}) vs {source.name} ({size(source)})",
        command=worker_command(
            "backfill", source=str(export), data=str(WORK / f"data-chatgpt-chatgpt-{label}"), load=False
        ),
        wall_s=chatgpt.wall,
        rss_mb=chatgpt.inner["tree_rss_mb"],
        throughput=f"{chatgpt.inner['lines'] / chatgpt.inner['seconds']:,.0f} records/s",
        target=f"<= {TARGET_RATIO:.0f}x the NDJSON's wall time",
        met=ratio <= TARGET_RATIO,
        details=f"median of {repeats} runs each; ChatGPT {chatgpt.wall:.1f} s wall, ingest "
        f"{chatgpt.inner['stages']['ingest']:.1f} s, {chatgpt.inner['tree_rss_mb']:,.0f} MB RSS (its "
        f"process and the ingest's workers; {chatgpt.rss_mb:,.0f} MB its process alone); "
        f"NDJSON {ndjson.wall:.1f} s wall, ingest {ndjson.inner['stages']['ingest']:.1f} s, "
        f"{ndjson.rss_mb:,.0f} MB RSS; ratio "
        f"{ratio:.2f}x; {chatgpt.inner['patterns']:,} vs {ndjson.inner['patterns']:,} patterns",
    )


def bench_cli_chatgpt(messages: int, repeats: int) -> Row:
    """A ChatGPT export through the CLI, transform only, against ``backfill()`` on the same export (with the
    CLI's default curation gates) in the same repeat. The export is the ``chatgpt_export`` row's."""
    label = size_label(messages)
    source = synth(WORK / f"m{label}.ndjson", messages)
    export = chatgpt_export(source, WORK / f"chatgpt-{label}" / "conversations.json")
    core_data, cli_data = WORK / f"data-core-chatgpt-{label}", WORK / f"data-cli-chatgpt-{label}"
    core_args = {"source": str(export), "data": str(core_data), "load": False, "gates": True}
    cmd = cli_command(export, cli_data, "--destination", "none")
    out = WORK / f"cli-chatgpt-{label}.json"
    runs = [core_then_cli(core_args, cmd, cli_data, out) for _ in range(repeats)]
    core, cli, report = median(runs, key=lambda r: r[1].wall / r[0].wall)
    ratio = cli.wall / core.wall
    tree = cli.inner["tree_rss_mb"]
    scopes = report["scopes"].values()
    return Row(
        name="cli_chatgpt_1m",
        title=f"{label} messages as a ChatGPT export through the CLI, transform only (assistants-backfill "
        "run --destination none --json) vs backfill() in the same run",
        input=f"{export.name} ({size(export)}, {messages:,} messages; the chatgpt_export row's)",
        command=shown(cmd),
        wall_s=cli.wall,
        rss_mb=tree,
        throughput=f"{ratio:.2f}x the core path",
        target="<= 1.15x the core path, <= 2 GB RSS (all its processes)",
        met=ratio <= 1.15 and tree <= 2048,
        details=f"{spread([r[1].wall / r[0].wall for r in runs], 'x')}CLI {cli.wall:.1f} s, its process "
        f"tree peaked at {tree:,.0f} MB RSS summed ({cli.inner['tree_pss_mb']:,.0f} MB PSS summed, sampled "
        f"every 2 s), first process {cli.rss_mb:,.0f} MB; core backfill() process {core.wall:.1f} s, "
        f"{core.inner['tree_rss_mb']:,.0f} MB (its process and the ingest's workers), stages "
        f"{core.inner['stages']} (command: {worker_command('backfill', **core_args)}, with the CLI's default "
        f"curation gates); {len(scopes)} scopes, {sum(s['patterns'] for s in scopes):,} patterns by the "
        f"CLI, {core.inner['patterns']:,} by the core path",
    )


if __name__ == "__main__":
    _convert(Path(sys.argv[1]), Path(sys.argv[2]))
