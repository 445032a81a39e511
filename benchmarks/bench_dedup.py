"""Benchmark for exact word-Jaccard near-duplicate removal (``pipelines.scoring.near_duplicates``, the
exact engine in ``near_duplicates/exact.py`` and the modules it builds on).

Usage (from the repo root)::

    .venv/bin/python benchmarks/bench_dedup.py --tasks 1000000            # time one scope of 1M tasks
    .venv/bin/python benchmarks/bench_dedup.py --tasks 100000 --check 3000 # + compare with the reference
    .venv/bin/python benchmarks/bench_dedup.py --tasks 1000000 --profile   # cProfile of the dedup call
    .venv/bin/python benchmarks/bench_dedup.py --tasks 1000000 --cluster 50000  # templated-prompt stress

or ``from benchmarks.bench_dedup import run; run(tasks=1_000_000, seed=0)`` (what the ``dedup_1m`` row
runs), which returns the printed dict.

Data (``generate``): deterministic; 6-60 words per task (log-normal, mean ~20), words drawn Zipf-like
from 6000 words (English function/prompt words at the head, pseudo-words in the tail, 12 non-ASCII words
so ~2.5% of tasks take the exact Python tokenisation path), 10% of tasks mutated copies of an earlier one
(exact repeat, upper-cased word, punctuation, word replaced, word added, tabs/double spaces/newline).

Results (2-core VM, Python 3.12, polars 2.1, numpy 2.5; final code). Other people's jobs were running on
the same two cores during all measurements (load average 2-4), so wall times vary by +-30% between runs;
``cpu_s`` is given to tell a slow run from a busy machine. Peak RSS is the process high-water mark
(ru_maxrss) and includes the generated input (~0.5 GB at 1M rows, "peak before" below).

    input                         wall        cpu       peak RSS (before call)  dropped
    100k tasks                    0.85-1.2 s  0.67 s    0.25 GB (0.14 GB)        7,306
    1M tasks                      7.0-8.6 s   8.6-8.9 s 0.97 GB (0.51 GB)       72,774
    1M incl. 50k template variants  11.9 s    11.2 s    1.17 GB (0.53 GB)      116,024
    1M incl. 200k template variants 12.4 s    12.7 s    1.11 GB (0.60 GB)      247,833

``--check`` against the brute-force reference: identical on the first 3,000 (of 100k) and 2,000 (of 1M).

Where the time goes at 1M (``--profile``, a 7.6 s run): tokenisation 3.2 s (Polars lower/split/categorical
~2.0 s, numpy sort/dedupe of the 19M (row, token) keys ~1.2 s), keep rule 2.4 s (building prefix entries and
planning blocks 1.0 s, range joins 1.0 s, exact verification 0.25 s, greedy walk 0.06 s), priority sort
0.9 s, 64-bit signatures 0.5 s, identical-set collapse 0.3 s, input checks 0.1 s.
Counts at 1M: 18.9M distinct (row, token) pairs, 16.6k distinct tokens; 50k rows collapse onto an
earlier identical token set; 376M raw prefix-sharing pairs without the size filter, 22M with the size and
positional range bounds, 24,246 after the bitmap bounds, 24,209 verified near-duplicate pairs.

Optimisation log (1M tasks unless stated; each step measured against the previous one, same machine,
numbers from the stage profiler used while developing; noisy as explained above):

1. Baseline: eager Polars ``str.split`` + ``cast(Categorical)``, (row * n_codes + rank) keys with
   integer division to decode, all size-filtered candidates (27M) gathered and filtered with positional
   + 64-bit bitmap bounds in 4M-pair chunks, verify all, Python greedy. 11.2 s total: tokenisation 7.4 s,
   candidates 2.1 s, identical-set collapse 0.5 s, priority sort 0.5 s; peak RSS 1.2 GB.
2. Tokenisation as one streaming query ``str.split(" ").cast(List(Categorical))`` (both cores), and
   shift/mask-packed (row, rank) keys instead of multiply/divide: tokenisation 7.4 s -> 2.6-2.8 s
   (total 6.9-8.1 s). (Also fixed: the "" token id must be read before the categories are freed.)
   Tried and rejected: a numpy byte-level tokenizer (~4 s, single-threaded), pyarrow split +
   dictionary_encode (3.8 s), eager Polars ``extract_all`` (3.2 s for the split alone).
3. Candidate join: the 64-bit bitmap test first, on per-entry signatures read sequentially, exact bounds
   only on its survivors, and the probe's partner range narrowed by the positional bound:
   candidates 2.9-3.4 s -> 1.6-2.0 s.
4. Chunk size 4M -> 256k pairs (temporaries stay in cache): 1.4-1.6 s -> 1.25-1.35 s for the join.
5. Robustness for clusters of mutually similar tasks (stress: 1M tasks with 300k exact copies of one task
   and 20k one-word variants of one 40-word template). After step 4 this took 233 s and 4.2 GB: every
   variant pair shares the template's rarest tokens (124M pairs, 5M of them true near-duplicates).
   a. Lazy verification in the greedy walk (pairs whose earlier row is already dropped are never
      verified): 233 s -> 30 s, 4.2 -> 2.7 GB.
   b. Second-stage 256-bit bitmap, built lazily for survivors of the 64-bit test (64 bits saturate at
      ~40 tokens): candidate pairs in the cluster 49M -> 4.5M.
   c. Priority-ordered blocks, each joined only against rows already *kept* (a cluster keeps few), blocks
      halved while their internal join exceeds 16M raw pairs: keep rule 24 s -> 4.4 s; stress total
      13 s / 1.5 GB; with 100k variants 14.7 s. The plain 1M input runs as two blocks, cost unchanged.
6. Priority sort by id, then stably by (score, created_at) instead of one three-key sort: 1.1 -> 0.8 s.
   Probe entries kept sorted (ordered needles for searchsorted, kept-row segments need no re-sort):
   range computation 1.4 -> 0.6 s. Set hash for the identical-set collapse derived from the 64-bit
   bitmap instead of a separate pass over all tokens: collapse 0.9 -> 0.4 s.

Other checks done while optimising: vocabulary of 500 or 2000 words instead of 6000 (bigger prefix
buckets) 10-12 s; 30% near-duplicates 11.7 s; every task non-ASCII (all rows tokenised by Python) 14 s;
20k tasks of 200-800 words 2.7 s (all at load ~3, before steps 5c-6).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

# Allow ``python benchmarks/bench_dedup.py`` from the repo root without installing anything.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.scoring.near_duplicates import near_duplicates, near_duplicates_reference

# Common English/prompt words get the head of the Zipf distribution.
_COMMON_WORDS = """
the to a and of for in is on with my this that it you can i how what be an me please from at your write
make do are by as use if help create code should not or we have will using all but so get about new list
data function python file table query error when which explain need want give one into more some like
show add find each out there they was has any only return user test value text run its our would other
also then just than these example step simple way why between without
"""
# A few non-ASCII words so that a realistic share of tasks takes the exact (Python) tokenisation path,
# including 'İ' whose lower() changes length and a final sigma.
_UNICODE_WORDS = "café naïve résumé über straße İstanbul ΟΔΟΣ → “quoted” 🙂 日本語 señor"
_SYLLABLES = "ka lo mi ne ru sa te vo zi ba de fi gu ho ja ku le ma no pi qu re si tu va we xe yo zu tra gro"


def _vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """Common English words first (they get the Zipf head), then pronounceable pseudo-words."""
    unicode_words = _UNICODE_WORDS.split()
    syllables = _SYLLABLES.split()
    words = list(dict.fromkeys(_COMMON_WORDS.split()))
    seen = set(words) | set(unicode_words)
    while len(words) < size - len(unicode_words):
        n_syll = int(rng.integers(2, 5))
        w = "".join(syllables[int(i)] for i in rng.integers(0, len(syllables), n_syll))
        if w not in seen:
            seen.add(w)
            words.append(w)
    # Spread the unicode words over the mid/tail of the distribution rather than the head.
    for k, w in enumerate(unicode_words):
        words.insert(200 + k * ((len(words) - 200) // len(unicode_words)), w)
    return words


def _mutate(task: str, kind: int, vocab: list[str], rng: np.random.Generator) -> str:
    """A near-duplicate of ``task``: repeat, case, punctuation, word replaced/added, or odd whitespace."""
    src = task.split(" ")
    pos = int(rng.integers(0, len(src)))
    if kind == 1:
        src[pos] = src[pos].upper()
    elif kind == 2:
        src[pos] = src[pos] + str(rng.choice([",", ".", "?", "!"]))
    elif kind == 3:
        src[pos] = vocab[int(rng.integers(0, len(vocab)))]
    elif kind == 4:
        src.insert(pos, vocab[int(rng.integers(0, len(vocab)))])
    elif kind == 5:
        return "  ".join(src[:pos]) + "\t" + " ".join(src[pos:]) + "\n"
    return " ".join(src)


def generate(
    tasks: int, seed: int = 0, vocab_size: int = 6000, dup_rate: float = 0.10, cluster: int = 0
) -> pl.DataFrame:
    """Deterministic synthetic patterns resembling user prompts.

    Lengths are 6-60 words (log-normal around ~18), words are drawn from a Zipf-Mandelbrot distribution
    over ``vocab_size`` words (so 'the' is very frequent and most words are rare), and ``dup_rate`` of the
    tasks are mutated copies of an earlier task: exact repeat, case change, punctuation, one word replaced,
    one word added, or odd whitespace. Scores are rounded to 2 decimals and timestamps to whole seconds so
    that the keep-rule tie-breaks are exercised.

    ``cluster`` > 0 replaces that many tasks (spread over the input) by one-word variants of a single
    40-word template (a stress case: templated prompts are mutually similar, so pairs grow quadratically).
    """
    rng = np.random.default_rng(seed)
    vocab = _vocabulary(vocab_size, rng)
    ranks = np.arange(1, len(vocab) + 1, dtype=np.float64)
    probs = 1.0 / (ranks + 2.7) ** 1.05
    probs /= probs.sum()

    vocab_arr = np.array(vocab, dtype=object)
    is_dup = rng.random(tasks) < dup_rate
    is_dup[:1] = False
    kinds = rng.integers(0, 6, tasks)
    out: list[str] = []
    # Chunked so that generating the input doesn't dominate the process's peak RSS.
    for chunk_start in range(0, tasks, 100_000):
        n_chunk = min(100_000, tasks - chunk_start)
        lengths = np.clip(np.rint(rng.lognormal(np.log(18.0), 0.5, n_chunk)), 6, 60).astype(np.int64)
        words = vocab_arr[rng.choice(len(vocab), size=int(lengths.sum()), p=probs)]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for k in range(n_chunk):
            t = chunk_start + k
            if is_dup[t]:
                out.append(_mutate(out[int(rng.integers(0, t))], int(kinds[t]), vocab, rng))
            else:
                w = list(words[offsets[k] : offsets[k + 1]])
                w[0] = w[0].capitalize()
                out.append(" ".join(w) + ("?" if t % 3 == 0 else ""))

    if cluster:
        template = [f"tmpl{k}" for k in range(40)]
        for t in rng.choice(tasks, size=min(cluster, tasks), replace=False).tolist():
            w = list(template)
            w[int(rng.integers(0, 40))] = f"var{int(rng.integers(0, 1000))}"
            out[t] = " ".join(w)

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


def run(tasks: int, seed: int = 0, check: int = 0, cluster: int = 0, profile: bool = False) -> dict:
    """Generate ``tasks`` synthetic patterns, time ``near_duplicates`` and return the measurements.

    A tiny warm-up call first keeps one-off costs (thread pools, regex compilation) out of the timing.
    ``peak_rss_mb`` is the process high-water mark (ru_maxrss) after the call and includes the generated
    input; ``peak_rss_mb_before`` is the mark before the call, so their difference bounds what dedup
    itself added. ``cpu_s`` (user + system, all threads) helps tell a slow run from a busy machine.
    ``check`` > 0 additionally compares against the brute-force reference on the first ``check`` tasks.
    ``profile`` prints a cProfile summary of the timed call (cumulative time per function).
    """
    t0 = time.perf_counter()
    df = generate(tasks, seed, cluster=cluster)
    gen_s = time.perf_counter() - t0
    near_duplicates(df.head(1000))
    rss_before = _peak_rss_mb()
    cpu0 = time.process_time()
    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    res = near_duplicates(df)
    if prof:
        prof.disable()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    out: dict = {
        "tasks": tasks,
        "seed": seed,
        "cluster": cluster,
        "generate_s": round(gen_s, 2),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "tasks_per_s": round(tasks / wall) if wall > 0 else None,
        "peak_rss_mb_before": round(rss_before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "dropped": int((~res["kept"]).sum()),
    }
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(r"near_duplicates", 25)
    if check:
        sub = df.head(check)
        ref = near_duplicates_reference(sub)
        out["check_n"] = check
        out["check_ok"] = near_duplicates(sub).equals(ref)
        out["check_dropped"] = int((~ref["kept"]).sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", type=int, default=0, help="compare with the reference on the first N tasks")
    ap.add_argument("--cluster", type=int, default=0, help="inject N one-word variants of one template")
    ap.add_argument("--profile", action="store_true", help="print a cProfile summary of the timed call")
    args = ap.parse_args()
    res = run(args.tasks, args.seed, args.check, args.cluster, args.profile)
    for k, v in res.items():
        print(f"{k:>20}: {v}")


if __name__ == "__main__":
    main()
