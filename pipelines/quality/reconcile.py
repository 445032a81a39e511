"""Counts that must add up, recomputed from the files themselves (never from a stage's own report),
so a lost or doubled row anywhere shows as a difference.

- per dump: lines = staged rows + quarantined at ingest
- per scope: lines in = messages + quarantined + exact repeats
- per scope: lines in = messages + quarantined + exact repeats, and every dump that staged rows into
  the scope reconciles (a quarantined line lost at ingest leaves the scope's own sum intact)
- per scope: messages = messages in current patterns + current unpaired messages (and none in both),
  compared by message id so that the messages unaccounted for are named
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import polars as pl

from pipelines.ingest.catalog import read_manifest
from pipelines.pairing.batches import current
from pipelines.tables import DataLayout, parquet_files


def _rows(files: list) -> int:
    return int(pl.scan_parquet(files).select(pl.len()).collect().item()) if files else 0


# Ids listed by name in a reconciliation (the counts beside them are complete).
NAMED = 20


def dump_line_counts(layout: DataLayout, dump_ids: list[str] | None = None) -> pl.DataFrame:
    """Per dump (all, or ``dump_ids``): lines read, rows staged and rows quarantined, as found on disk."""
    manifest = read_manifest(layout).select("dump_id", "file", "lines")
    if dump_ids is not None:
        manifest = manifest.filter(pl.col("dump_id").is_in(dump_ids))
    rows = []
    for dump_id in manifest["dump_id"].to_list():
        staged = _rows(sorted(layout.raw(dump_id).glob("scope=*/*.parquet")))
        quarantined = _rows(parquet_files(layout.quarantine(), f"dump={dump_id}-c*.parquet"))
        rows.append({"dump_id": dump_id, "staged": staged, "quarantined": quarantined})
    found = pl.DataFrame(rows, schema={"dump_id": pl.String, "staged": pl.Int64, "quarantined": pl.Int64})
    return manifest.join(found, on="dump_id", how="left").with_columns(
        ok=pl.col("lines") == pl.col("staged") + pl.col("quarantined")
    )


@dataclass
class MessageCounts:
    """Per scope: every line that reached the scope is a message, a quarantined row or an exact repeat."""

    scope: str
    lines_in: int
    messages: int
    quarantined: int
    repeats: int
    # files of the dumps feeding the scope whose lines != staged + quarantined
    dumps_mismatched: list[str] = field(default_factory=list)

    @property
    def lines_reconcile(self) -> bool:
        return self.lines_in == self.messages + self.quarantined + self.repeats and not self.dumps_mismatched


@dataclass
class PairingCounts:
    """Per scope: every message is in exactly one current pattern or in the unpaired table."""

    scope: str
    messages: int
    in_patterns: int
    unpaired: int
    in_both: int
    # message ids in neither table, and in both (at most NAMED of each)
    unaccounted_ids: list[str] = field(default_factory=list)
    in_both_ids: list[str] = field(default_factory=list)

    @property
    def messages_reconcile(self) -> bool:
        return (
            self.messages == self.in_patterns + self.unpaired
            and self.in_both == 0
            and not self.unaccounted_ids
        )


@dataclass
class ScopeCounts:
    lines: MessageCounts
    pairing: PairingCounts

    @property
    def lines_reconcile(self) -> bool:
        return self.lines.lines_reconcile

    @property
    def messages_reconcile(self) -> bool:
        return self.pairing.messages_reconcile

    def as_dict(self) -> dict:
        return (
            asdict(self.lines)
            | asdict(self.pairing)
            | {"lines_reconcile": self.lines_reconcile, "messages_reconcile": self.messages_reconcile}
        )


def message_counts(layout: DataLayout, scope: str) -> MessageCounts:
    raw = _rows(sorted(layout.raw().glob(f"dump=*/scope={scope}/*.parquet")))
    qfiles = parquet_files(layout.quarantine())
    q = (
        pl.scan_parquet(qfiles).filter(pl.col("scope") == scope).group_by("stage").len().collect()
        if qfiles
        else pl.DataFrame(schema={"stage": pl.String, "len": pl.UInt32})
    )
    by_stage = dict(q.iter_rows())
    q_ingest, q_messages = int(by_stage.get("ingest", 0)), int(by_stage.get("messages", 0))
    stats = parquet_files(layout.message_stats(scope))
    repeats = int(pl.scan_parquet(stats).select(pl.col("repeats").sum()).collect().item()) if stats else 0
    feeding = [p.parent.name.removeprefix("dump=") for p in layout.raw().glob(f"dump=*/scope={scope}")]
    dumps = dump_line_counts(layout, feeding) if feeding else None
    return MessageCounts(
        scope=scope,
        lines_in=raw + q_ingest,
        messages=_rows(parquet_files(layout.messages(scope))),
        quarantined=q_ingest + q_messages,
        repeats=repeats,
        dumps_mismatched=[] if dumps is None else dumps.filter(~pl.col("ok"))["file"].to_list(),
    )


def pairing_counts(layout: DataLayout, scope: str) -> PairingCounts:
    patterns = current(layout, "patterns", scope)
    unpaired = current(layout, "unpaired", scope)
    no_ids = pl.DataFrame(schema={"message_id": pl.String})
    paired_ids = (
        patterns.select(pl.concat_list("user_message_ids", "assistant_message_ids").alias("message_id"))
        .explode("message_id")
        .collect()
        if patterns is not None
        else no_ids
    )
    unpaired_ids = unpaired.select("message_id").collect() if unpaired is not None else no_ids
    files = parquet_files(layout.messages(scope))
    messages = pl.scan_parquet(files).select("message_id").collect() if files else no_ids
    accounted = pl.concat([paired_ids, unpaired_ids])
    unaccounted = messages.join(accounted, on="message_id", how="anti")["message_id"]
    in_both = paired_ids.join(unpaired_ids, on="message_id", how="semi")["message_id"]
    return PairingCounts(
        scope=scope,
        messages=messages.height,
        in_patterns=paired_ids.height,
        unpaired=unpaired_ids.height,
        in_both=in_both.len(),
        unaccounted_ids=sorted(unaccounted.to_list())[:NAMED],
        in_both_ids=sorted(in_both.unique().to_list())[:NAMED],
    )


def scope_counts(layout: DataLayout, scope: str) -> ScopeCounts:
    return ScopeCounts(message_counts(layout, scope), pairing_counts(layout, scope))
