"""Migration-scale benchmarks of the backfill; writes ``benchmarks/RESULTS.md``.

    python -m benchmarks.run                      # every row except 10M (its last result is kept)
    python -m benchmarks.run --with-10m           # also the 10M rows (~13 GB of input, generated once)
    python -m benchmarks.run --only load,guide    # some rows
    python -m benchmarks.run --quick              # small sizes, a smoke test (writes work/RESULTS-quick.md)

Inputs come from ``pipelines.tools.synth`` and are generated once into ``benchmarks/work/`` (reused when
present). Every measurement runs in a fresh subprocess (``python -m benchmarks.run --worker ...``); its
wall time and peak RSS are those of that process, taken from ``os.wait4`` (so they include interpreter
start and imports), and the worker also reports the time of the measured call alone.

Properties of the benchmark machine, handled and said so in the results:
- the libraries' bytecode is compiled at install (``make install``), and the subprocesses may write the
  project's own even when ``PYTHONDONTWRITEBYTECODE`` is set: no measured run compiles its imports;
- the VM hands freed memory back to its host within seconds, and a process taking fresh memory pays
  0.2-4.7 s per GiB depending on the host's load: each row records a probe of the host taken just
  before it (first touch of 1 GiB, sha256 of 256 MiB);
- for minutes after a mass delete, ext4 creates files several times slower: folders of earlier runs
  are moved aside and deleted after the last row.

This module is the command line: it selects the rows and writes the report after each one. The rows are
in ``rows``, their inputs in ``inputs``, the measured calls in ``workers`` (run in fresh processes by
``measure``), the report in ``report``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

# Rows of the 10M export: minutes each and tens of GB, run only with --with-10m (or --only).
# Rows measured in the same run as another row (the re-run needs the CLI row's data folder).
MEASURED_WITH = {"cli_rerun_1m": "cli_1m", "guide_ours": "guide"}
BIG_ROWS = {"transform_10m", "cli_10m", "scaleout_10m"}


def _parser() -> argparse.ArgumentParser:
    from benchmarks.report import ORDER

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--only",
        help=f"comma-separated rows: {', '.join(ORDER)}",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--with-10m", action="store_true", help="include the 10M-message rows")
    # How the harness runs one measured call in a fresh process (benchmarks.measure); not for people.
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--args", help=argparse.SUPPRESS)
    return parser


def _worker(argv: list[str]) -> None:
    """A measured call in this fresh process: only what the call needs is imported (the harness's own
    modules took ~0.1 s, which every whole-process figure counted)."""
    from benchmarks.workers import run_worker

    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True)
    parser.add_argument("--args")
    a = parser.parse_args(argv)
    print(json.dumps(run_worker(a.worker, json.loads(a.args or "{}"))), flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker(argv)
        return
    from benchmarks.inputs import empty_trash
    from benchmarks.measure import measure
    from benchmarks.paths import QUICK_RESULTS, RESULTS, WORK
    from benchmarks.report import commit, describe_machine, fmt, load_average, load_previous, write_report
    from benchmarks.rows import FULL, QUICK, benches

    parser = _parser()
    a = parser.parse_args(argv)
    sizes = QUICK if a.quick else FULL
    WORK.mkdir(parents=True, exist_ok=True)
    rows_by_name = benches(sizes)
    if a.only:
        # A row measured by another row's run is selected through that row.
        named = [n.strip() for n in a.only.split(",") if n.strip()]
        selected = list(dict.fromkeys(MEASURED_WITH.get(n, n) for n in named))
        unknown = set(selected) - set(rows_by_name)
        if unknown:
            parser.error(f"unknown rows {sorted(unknown)}; choose from {sorted(rows_by_name)}")
    else:
        selected = [n for n in rows_by_name if n not in BIG_ROWS or a.with_10m]
    report = QUICK_RESULTS if a.quick else RESULTS
    # A run of some rows keeps the others as they were last measured.
    rows = load_previous(report)
    machine = describe_machine()
    load_avg = load_average()
    at_commit = commit()
    try:
        for name in selected:
            if name in BIG_ROWS:
                # The earlier rows' folders waiting in the trash (~14 GB after cli_1m) beside a 10M row's
                # export and folders filled the disk; deleted here, before the row's clock starts.
                empty_trash()
            print(f"== {name}", flush=True)
            probe = measure("probe").inner
            host = (
                f"host just before: 1 GiB first touched in {probe['touch_s']:.2f} s, "
                f"sha256 of 256 MiB in {probe['sha_s']:.2f} s, load average {load_average()}"
            )
            for row in rows_by_name[name]():
                row.measured_at = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
                row.commit = at_commit
                row.details = f"{row.details}; {host}"
                rows[row.name] = row
                print(
                    f"   {row.name}: wall {fmt(row.wall_s)} s, rss {fmt(row.rss_mb, 0)} MB, "
                    f"{row.throughput}, met={row.met}; {row.details}",
                    flush=True,
                )
                # Written after every row, so a run stopped halfway keeps what it measured.
                write_report(report, rows, machine, load_avg)
    finally:
        empty_trash()
    print(f"wrote {report}")


if __name__ == "__main__":
    main()
