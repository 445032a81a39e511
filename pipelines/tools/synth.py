"""Synthetic Assistants exports in the guide's NDJSON shape, for the demo, the tests and the benchmarks.

Everything is generated column-wise with numpy and Polars in chunks (texts are slices of one random
corpus), so millions of messages take seconds and memory stays bounded by the chunk size. The knobs
mirror what real exports contain: many assistants, threads of about eight messages, ``created_at``
ties, runs of consecutive same-role messages, near-duplicate prompts, and broken lines.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

BASE_EPOCH = 1_735_689_600  # 2025-01-01, within the Assistants API's lifetime
_BAD_LINES = (
    '{"thread_id": "thread_broken", "role": "user", "text": "cut off',
    "not json at all",
    '{"thread_id": "thread_x", "assistant_id": "asst_x", "message_id": "msg_bad_role", "role": "tool", '
    '"text": "x", "created_at": 1735689600}',
    '{"thread_id": "thread_x", "assistant_id": "asst_x", "message_id": "msg_bad_time", "role": "user", '
    '"text": "x", "created_at": "yesterday"}',
    '{"thread_id": "thread_x", "assistant_id": "asst_x", "role": "user", "text": "no id", '
    '"created_at": 1735689600}',
    "",
)


@dataclass(frozen=True)
class SynthSpec:
    messages: int = 10_000
    assistants: int = 12
    mean_thread_len: int = 8
    tie_rate: float = 0.3  # share of messages with the same created_at as the one before
    consecutive_rate: float = 0.08  # share of messages that repeat the previous role
    near_duplicate_rate: float = 0.10  # share of prompts that near-duplicate an earlier prompt
    bad_line_rate: float = 0.001
    system_rate: float = 0.0
    dumps: int = 1
    # Share of the messages (by time) in each dump, e.g. (0.99, 0.01): a large export, then a small late
    # one that continues some of its threads. Default: equal shares.
    shares: tuple[float, ...] | None = None
    seed: int = 7
    chunk_messages: int = 200_000

    def __post_init__(self) -> None:
        if self.shares is not None and (len(self.shares) != self.dumps or min(self.shares) <= 0):
            raise ValueError(f"shares must give one positive weight per dump ({self.dumps})")


def _corpus(rng: np.random.Generator, vocab: int = 4_000, words: int = 400_000) -> tuple[str, np.ndarray]:
    """A Zipf-distributed word corpus and the start offset of every word in it."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(2, 10, size=vocab)
    vocabulary = ["".join(rng.choice(letters, size=n)) for n in lengths]
    ranks = np.arange(1, vocab + 1)
    p = 1.0 / ranks**1.05
    p /= p.sum()
    picks = rng.choice(vocab, size=words, p=p)
    chosen = [vocabulary[i] for i in picks]
    starts = np.zeros(words + 1, dtype=np.int64)
    np.cumsum([len(w) + 1 for w in chosen], out=starts[1:])
    return " ".join(chosen) + " ", starts


def _thread_plan(rng: np.random.Generator, spec: SynthSpec, offset: int, n: int) -> pl.DataFrame:
    """Thread membership, position and role of ``n`` messages; threads never cross chunk borders."""
    lens = rng.integers(2, 2 * spec.mean_thread_len - 1, size=n // 2 + 2)
    lens = lens[: np.searchsorted(np.cumsum(lens), n) + 1]
    lens[-1] -= lens.sum() - n
    thread = np.repeat(np.arange(len(lens)), lens)
    pos = np.arange(n) - np.repeat(np.cumsum(lens) - lens, lens)
    alternate = pos % 2  # 0 = user, 1 = assistant
    flip = rng.random(n) < spec.consecutive_rate
    role_code = np.where(flip & (pos > 0), (alternate + 1) % 2, alternate)
    role = np.where(role_code == 0, "user", "assistant")
    if spec.system_rate:
        role = np.where((pos == 0) & (rng.random(n) < spec.system_rate), "system", role)
    thread_ids = np.char.add("thread_", np.char.zfill((thread + offset).astype(str), 9))
    assistant = rng.integers(0, spec.assistants, size=len(lens))[thread]
    start = BASE_EPOCH + rng.integers(0, 365 * 86_400, size=len(lens))[thread]
    gaps = np.where(rng.random(n) < spec.tie_rate, 0, rng.integers(1, 120, size=n))
    gaps[pos == 0] = 0
    created = start + np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[np.cumsum(lens) - lens], lens)
    return pl.DataFrame(
        {
            "thread_id": thread_ids,
            "assistant_id": np.char.add("asst_", np.char.zfill(assistant.astype(str), 3)),
            "message_id": np.char.add("msg_", np.char.zfill((np.arange(n) + offset).astype(str), 10)),
            "role": role,
            "created_at": created.astype(np.int64),
        }
    )


def _texts(
    rng: np.random.Generator, plan: pl.DataFrame, corpus: str, starts: np.ndarray, spec: SynthSpec
) -> pl.Series:
    n = plan.height
    last_word = len(starts) - 62
    is_user = (plan["role"] != "assistant").to_numpy()
    words = rng.integers(6, 61, size=n)
    first = rng.integers(0, last_word, size=n)
    # A near-duplicate reuses an earlier prompt's words: exactly, upper-cased, or with one word more.
    dup = is_user & (rng.random(n) < spec.near_duplicate_rate)
    src = rng.integers(0, n, size=n)
    src = np.where(is_user[src], src, np.maximum(src - 1, 0))
    first = np.where(dup & is_user[src], first[src], first)
    words = np.where(dup & is_user[src], np.maximum(words[src], 25), words)
    variant = np.where(dup, rng.integers(0, 3, size=n), -1)
    begin = starts[first]
    prompt_len = starts[first + words] - begin - 1
    # Log-uniform answer sizes: most answers are short, a few run to 8 KB.
    answer_len = np.exp(rng.uniform(np.log(200), np.log(8_000), size=n)).astype(np.int64)
    offset = np.where(is_user, begin, rng.integers(0, len(corpus) - 8_001, size=n))
    length = np.where(is_user, prompt_len, answer_len)
    # Slicing in Python is fast here (one slice per message); Polars' char-based slice of one huge
    # literal is quadratic.
    sliced = [corpus[o : o + k] for o, k in zip(offset.tolist(), length.tolist(), strict=True)]
    frame = pl.DataFrame({"t": sliced, "v": variant})
    text = (
        pl.when(pl.col("v") == 1)
        .then(pl.col("t").str.to_uppercase())
        .when(pl.col("v") == 2)
        .then(pl.col("t") + pl.lit(" please"))
        .otherwise(pl.col("t"))
    )
    return frame.select(text=text)["text"]


def _bad_lines(rng: np.random.Generator, lines: pl.Series, rate: float) -> pl.Series:
    if rate <= 0:
        return lines
    hit = rng.random(len(lines)) < rate
    if not hit.any():
        return lines
    which = rng.integers(0, len(_BAD_LINES), size=len(lines))
    bad = pl.Series(np.array(_BAD_LINES, dtype=object)[which], dtype=pl.String)
    return pl.select(pl.when(pl.Series(hit)).then(bad).otherwise(lines)).to_series()


def generate(spec: SynthSpec, out: Path) -> list[Path]:
    """Write ``spec.messages`` messages to ``out`` (a file, or with ``dumps > 1`` a folder of dumps whose
    time ranges split some threads between consecutive dumps). Returns the files written."""
    rng = np.random.default_rng(spec.seed)
    corpus, starts = _corpus(rng)
    out = Path(out)
    if spec.dumps > 1:
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"dump-{i + 1:03d}.ndjson" for i in range(spec.dumps)]
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        paths = [out]
    handles = [p.open("wb") for p in paths]
    try:
        done = 0
        while done < spec.messages:
            n = min(spec.chunk_messages, spec.messages - done)
            plan = _thread_plan(rng, spec, done, n)
            plan = plan.with_columns(text=_texts(rng, plan, corpus, starts, spec))
            lines = plan.select(
                pl.struct("thread_id", "assistant_id", "message_id", "role", "text", "created_at")
                .struct.json_encode()
                .alias("line"),
                "created_at",
            )
            lines = lines.with_columns(_bad_lines(rng, lines["line"], spec.bad_line_rate).alias("line"))
            if spec.dumps > 1:
                # Split by time: threads running across a boundary continue in the next dump.
                weights = np.asarray(spec.shares or [1.0] * spec.dumps, dtype=np.float64)
                cuts = np.cumsum(weights)[:-1] / weights.sum()
                edges = np.quantile(lines["created_at"].to_numpy(), cuts)
                part = np.searchsorted(edges, lines["created_at"].to_numpy(), side="right")
            else:
                part = np.zeros(lines.height, dtype=np.int64)
            for i, handle in enumerate(handles):
                chunk = lines.filter(pl.Series(part == i)).select("line")
                if chunk.height:
                    chunk.write_csv(handle, include_header=False, quote_style="never")
            done += n
    finally:
        for h in handles:
            h.close()
    return paths


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Generate a synthetic Assistants NDJSON export (the guide's shape), for trials.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="output file, or folder when --dumps > 1")
    parser.add_argument("--messages", type=int, default=SynthSpec.messages, help="messages in all")
    parser.add_argument("--assistants", type=int, default=SynthSpec.assistants, help="distinct assistant ids")
    parser.add_argument(
        "--dumps", type=int, default=1, help="dump files to spread the messages over, by time"
    )
    parser.add_argument(
        "--shares", help="comma-separated share of the messages per dump, by time (default: equal), e.g. 99,1"
    )
    parser.add_argument(
        "--tie-rate", type=float, default=SynthSpec.tie_rate, help="share of messages sharing a created_at"
    )
    parser.add_argument(
        "--consecutive-rate",
        type=float,
        default=SynthSpec.consecutive_rate,
        help="share of turns with two messages of one role in a row",
    )
    parser.add_argument(
        "--near-duplicate-rate",
        type=float,
        default=SynthSpec.near_duplicate_rate,
        help="share of questions that repeat an earlier one with a small change",
    )
    parser.add_argument(
        "--bad-line-rate", type=float, default=SynthSpec.bad_line_rate, help="share of malformed lines"
    )
    parser.add_argument("--seed", type=int, default=SynthSpec.seed, help="random seed (same seed, same file)")
    a = parser.parse_args(argv)
    spec = SynthSpec(
        messages=a.messages,
        assistants=a.assistants,
        dumps=a.dumps,
        shares=tuple(float(x) for x in a.shares.split(",")) if a.shares else None,
        tie_rate=a.tie_rate,
        consecutive_rate=a.consecutive_rate,
        near_duplicate_rate=a.near_duplicate_rate,
        bad_line_rate=a.bad_line_rate,
        seed=a.seed,
    )
    for path in generate(spec, a.out):
        print(f"{path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
