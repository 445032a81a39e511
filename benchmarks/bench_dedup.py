"""Benchmark for ``pipelines.dedup.near_duplicates`` (placeholder docstring, filled in after profiling)."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

# Allow ``python benchmarks/bench_dedup.py`` from the repo root without installing anything.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.dedup import near_duplicates, near_duplicates_reference  # noqa: E402

_COMMON = (
    "the to a and of for in is on with my this that it you can i how what be an me please from at your "
    "write make do are by as use if help create code should not or we have will using all but so get "
    "about new list data function python file table query error when which explain need want give one "
    "into more some like show add find each out there they was has any only return user test value text "
    "run its our would other also then just than these example step simple way why between without"
).split()
# A few non-ASCII words so that a realistic share of tasks takes the exact (Python) tokenisation path,
# including 'İ' whose lower() changes length and a final sigma.
_UNICODE = ["café", "naïve", "résumé", "über", "straße", "İstanbul", "ΟΔΟΣ", "→", "“quoted”", "🙂", "日本語", "señor"]
_SYLLABLES = (
    "ka lo mi ne ru sa te vo zi ba de fi gu ho ja ku le ma no pi qu re si tu va we xe yo zu "
    "tra pla gro spe ste chi sha tho bri cle dra fla"
).split()


def _vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """Common English words first (they get the Zipf head), then pronounceable pseudo-words."""
    words = list(dict.fromkeys(_COMMON))
    seen = set(words) | set(_UNICODE)
    while len(words) < size - len(_UNICODE):
        n_syll = int(rng.integers(2, 5))
        w = "".join(_SYLLABLES[int(i)] for i in rng.integers(0, len(_SYLLABLES), n_syll))
        if w not in seen:
            seen.add(w)
            words.append(w)
    # Spread the unicode words over the mid/tail of the distribution rather than the head.
    for k, w in enumerate(_UNICODE):
        words.insert(200 + k * ((len(words) - 200) // len(_UNICODE)), w)
    return words


def generate(tasks: int, seed: int = 0, vocab_size: int = 6000, dup_rate: float = 0.10) -> pl.DataFrame:
    """Deterministic synthetic patterns resembling user prompts.

    Lengths are 6-60 words (log-normal around ~18), words are drawn from a Zipf-Mandelbrot distribution
    over ``vocab_size`` words (so 'the' is very frequent and most words are rare), and ``dup_rate`` of the
    tasks are mutated copies of an earlier task: exact repeat, case change, punctuation, one word replaced,
    one word added, or odd whitespace. Scores are rounded to 2 decimals and timestamps to whole seconds so
    that the keep-rule tie-breaks are exercised.
    """
    rng = np.random.default_rng(seed)
    vocab = _vocabulary(vocab_size, rng)
    ranks = np.arange(1, len(vocab) + 1, dtype=np.float64)
    probs = 1.0 / (ranks + 2.7) ** 1.05
    probs /= probs.sum()

    lengths = np.clip(np.rint(rng.lognormal(np.log(18.0), 0.5, tasks)), 6, 60).astype(np.int64)
    word_idx = rng.choice(len(vocab), size=int(lengths.sum()), p=probs)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    vocab_arr = np.array(vocab, dtype=object)
    words = vocab_arr[word_idx]

    is_dup = rng.random(tasks) < dup_rate
    is_dup[0] = False
    kinds = rng.integers(0, 6, tasks)
    out: list[str] = []
    for t in range(tasks):
        if is_dup[t]:
            src = out[int(rng.integers(0, t))].split(" ")
            kind = kinds[t]
            pos = int(rng.integers(0, len(src)))
            if kind == 1:
                src[pos] = src[pos].upper()
            elif kind == 2:
                src[pos] = src[pos] + rng.choice([",", ".", "?", "!"])
            elif kind == 3:
                src[pos] = vocab[int(rng.integers(0, len(vocab)))]
            elif kind == 4:
                src.insert(pos, vocab[int(rng.integers(0, len(vocab)))])
            elif kind == 5:
                out.append("  ".join(src[:pos]) + "\t" + " ".join(src[pos:]) + "\n")
                continue
            out.append(" ".join(src))
        else:
            w = list(words[offsets[t] : offsets[t + 1]])
            w[0] = w[0].capitalize()
            out.append(" ".join(w) + ("?" if t % 3 == 0 else ""))

    base = datetime(2025, 1, 1, tzinfo=UTC)
    seconds = rng.integers(0, 365 * 86400, tasks)
    perm = rng.permutation(tasks)
    return pl.DataFrame(
        {
            "pattern_id": [f"pat-{i:08d}" for i in perm],
            "task": out,
            "eval_score": np.round(rng.random(tasks) * 10, 2),
            "created_at": pl.Series(seconds * 1_000_000).cast(pl.Datetime("us", "UTC")),
        }
    ).with_columns(pl.col("created_at").dt.offset_by(f"{int(base.timestamp())}s"))


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(tasks: int, seed: int = 0, check: int = 0) -> dict:
    """Generate ``tasks`` synthetic patterns, time ``near_duplicates`` and return the measurements.

    ``check`` > 0 additionally compares against the brute-force reference on the first ``check`` tasks.
    Peak RSS is for the whole process (includes generation), so it is an upper bound for the dedup step.
    """
    t0 = time.perf_counter()
    df = generate(tasks, seed)
    gen_s = time.perf_counter() - t0
    rss_before = _peak_rss_mb()
    t0 = time.perf_counter()
    res = near_duplicates(df)
    wall = time.perf_counter() - t0
    out = {
        "tasks": tasks,
        "seed": seed,
        "generate_s": round(gen_s, 2),
        "wall_s": round(wall, 3),
        "tasks_per_s": round(tasks / wall) if wall > 0 else None,
        "peak_rss_mb_before": round(rss_before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "dropped": int((~res["kept"]).sum()),
    }
    if check:
        sub = df.head(check)
        fast = near_duplicates(sub)
        ref = near_duplicates_reference(sub)
        out["check_n"] = check
        out["check_ok"] = fast.equals(ref)
        out["check_dropped"] = int((~ref["kept"]).sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", type=int, default=0, help="compare with the reference on the first N tasks")
    args = ap.parse_args()
    res = run(args.tasks, args.seed, args.check)
    for k, v in res.items():
        print(f"{k:>20}: {v}")


if __name__ == "__main__":
    main()
