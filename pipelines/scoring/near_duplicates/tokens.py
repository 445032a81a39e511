"""The tokeniser both near-duplicate engines use: Python's ``task.lower().split()``, dictionary-encoded.

Invariant: the tokens of a row are exactly the words of ``(task or "").lower().split()`` as CPython
computes them. Polars does the work only on rows where it provably agrees with Python: pure-ASCII rows
whose only whitespace is " ", where lowercasing maps just A-Z and splitting is a literal split on " "
(empty tokens dropped). Every other row (non-ASCII, or ASCII whitespace such as \\t \\n \\x1c-\\x1f) is
normalised by Python itself, because Rust's Unicode tables/whitespace class and CPython's can disagree.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl

# ASCII characters that Python's str.split() treats as whitespace besides " ": \t \n \v \f \r and the
# information separators \x1c-\x1f (which the Unicode White_Space property, and so regex \s, does not).
_ODD_ASCII_WS = r"[\t\n\x0b\x0c\r\x1c-\x1f]"


class Encoded(NamedTuple):
    """Every row's tokens as dictionary codes, row after row; ``lengths[i]`` codes belong to row i.

    Runs of spaces (and empty tasks) yield the pseudo-token "" (code ``empty``, -1 when there is none),
    which ``str.split()`` without argument never does: callers drop it.
    """

    lengths: np.ndarray
    codes: np.ndarray
    empty: int
    strings: pl.Series | None  # the token of each code, when asked for


def encode(tasks: pl.Series, with_strings: bool = False) -> Encoded:
    """The tokens of every task (a null task has none), with ``with_strings`` the token of each code."""
    tasks = tasks.fill_null("")
    exotic = (tasks.str.len_bytes() != tasks.str.len_chars()) | tasks.str.contains(_ODD_ASCII_WS)
    low = tasks.str.to_lowercase()
    idx = exotic.arg_true()
    if idx.len():
        normalised = [" ".join(t.lower().split()) for t in tasks.gather(idx).to_list()]
        # Scatter after lowercasing: Rust's to_lowercase must never touch Python's output, since the two
        # Unicode tables may disagree (e.g. characters added in a newer Unicode version).
        low = low.scatter(idx, pl.Series(normalised, dtype=pl.String))
    # A fresh Categories keeps the dictionary private to this call (freed with the data) instead of
    # growing the process-global one; the streaming engine splits and encodes on all cores.
    cats = pl.Categories.random()
    parts = (
        pl.DataFrame({"t": low})
        .lazy()
        .select(pl.col("t").str.split(" ").cast(pl.List(pl.Categorical(cats))))
        .collect(engine="streaming")
        .to_series()
    )
    del low
    lengths = parts.list.len().to_numpy()
    codes = parts.explode().to_physical().to_numpy()
    # Read the dictionary while `parts` is alive: the Categories mapping is freed with its last user.
    empty = int(cats[""]) if "" in cats else -1  # (Categories has no .get)
    strings = cats.to_series() if with_strings else None
    del parts
    return Encoded(lengths, codes, empty, strings)


def token_pairs(tasks: pl.Series) -> tuple[np.ndarray, np.ndarray, pl.Series]:
    """The tokens of every task as ``(rows, codes, tokens)``: one (row, code) pair per token (repeats
    included, "" never), codes indexing the ``tokens`` strings."""
    encoded = encode(tasks, with_strings=True)
    rows = np.repeat(np.arange(tasks.len(), dtype=np.int64), encoded.lengths)
    codes = encoded.codes
    if encoded.empty >= 0:
        real = codes != encoded.empty
        rows, codes = rows[real], codes[real]
    assert encoded.strings is not None
    return rows, codes, encoded.strings.alias("token")
