"""Benchmarks of the backfill at migration scale; ``python -m benchmarks.run`` writes RESULTS.md."""
