"""GX imported with the modules it needs only for expectations this project does not run deferred."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from pipelines.imports import deferred


def _package(root: Path, name: str, body: str) -> None:
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "heavy.py").write_text(textwrap.dedent(body))


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A package ``toy_pkg`` whose module ``heavy`` counts how often its code ran."""
    _package(
        tmp_path,
        "toy_pkg",
        """
        import time
        import builtins
        builtins.toy_runs = getattr(builtins, "toy_runs", 0) + 1
        time.sleep(0.05)
        VALUE = 42
        def twice(x):
            return 2 * x
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    import builtins

    for name in ("toy_pkg.heavy", "toy_pkg"):
        sys.modules.pop(name, None)
    if hasattr(builtins, "toy_runs"):
        del builtins.toy_runs


def test_a_deferred_module_runs_at_its_first_use_and_once(toy: None) -> None:
    import builtins

    deferred(["toy_pkg.heavy"])
    import toy_pkg.heavy
    from toy_pkg import heavy

    assert heavy is toy_pkg.heavy
    assert not hasattr(builtins, "toy_runs"), "importing a deferred module must not run it"
    assert heavy.__name__ == "toy_pkg.heavy" and heavy.__spec__ is not None

    seen: list[int] = []
    threads = [threading.Thread(target=lambda: seen.append(heavy.VALUE)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [42] * 4
    assert builtins.toy_runs == 1
    assert heavy.twice(21) == 42
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        heavy.missing  # noqa: B018
    assert builtins.toy_runs == 1


def test_a_module_already_imported_is_left_alone(toy: None) -> None:
    import builtins

    import toy_pkg.heavy

    assert builtins.toy_runs == 1
    deferred(["toy_pkg.heavy", "no_such_package.anything"])
    assert sys.modules["toy_pkg.heavy"] is toy_pkg.heavy
    assert "no_such_package.anything" not in sys.modules


def test_a_deferred_module_that_fails_raises_where_it_is_used_and_again_when_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _package(tmp_path, "broken_pkg", "raise RuntimeError('broken at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        deferred(["broken_pkg.heavy"])
        from broken_pkg import heavy

        with pytest.raises(RuntimeError, match="broken at import"):
            heavy.anything  # noqa: B018
        assert "broken_pkg.heavy" not in sys.modules
        with pytest.raises(RuntimeError, match="broken at import"):
            import broken_pkg.heavy  # noqa: F401
    finally:
        for name in ("broken_pkg.heavy", "broken_pkg"):
            sys.modules.pop(name, None)


# In a fresh interpreter: which modules GX's import ran, the suites' results, and an expectation that
# needs scipy.stats (the KL divergence) still evaluated by GX.
_GX_SCRIPT = """
import json, sys
import polars as pl
from pipelines.imports import GREAT_EXPECTATIONS, import_ahead
import_ahead(GREAT_EXPECTATIONS).join()
probes = ("scipy.stats._stats_py", "altair.vegalite", "great_expectations.expectations")
ran = {name: name in sys.modules for name in probes}
from pipelines.quality.expectations import _gx_validate, validate_messages
messages = pl.LazyFrame(
    {
        "message_id": ["m1", "m1", "m3"],
        "thread_id": ["t1", "t1", None],
        "assistant_id": ["a", "a", "a"],
        "role": ["user", "assistant", "robot"],
        "text": ["q", "a", "x"],
        "created_at": pl.Series([1, 2, 3]).cast(pl.Datetime("us", "UTC")),
        "tenant_id": ["t"] * 3,
        "project_id": ["p"] * 3,
        "dump_id": ["d"] * 3,
        "line_no": [1, 2, 3],
        "branch": ["current"] * 3,
    }
)
report = validate_messages(messages)
failed = sorted((r["expectation"], r["column"], r["unexpected_count"]) for r in report.failed)
ran_after_suite = "scipy.stats._stats_py" in sys.modules
import great_expectations.expectations as gxe
kl = _gx_validate(
    "kl",
    pl.DataFrame({"x": ["a", "b", "a", "b"]}),
    [gxe.ExpectColumnKLDivergenceToBeLessThan(
        column="x", partition_object={"values": ["a", "b"], "weights": [0.5, 0.5]}, threshold=0.1
    )],
)
print(json.dumps({
    "ran": ran, "failed": failed, "ran_after_suite": ran_after_suite,
    "kl": [kl.success, kl.results[0]["observed_value"]],
    "ran_after_kl": "scipy.stats._stats_py" in sys.modules,
}))
"""


def test_gx_imports_without_scipy_stats_and_altair_and_still_runs_what_needs_them() -> None:
    import json

    out = subprocess.run(
        [sys.executable, "-c", _GX_SCRIPT], capture_output=True, text=True, timeout=300, cwd=Path.cwd()
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ran"] == {
        "scipy.stats._stats_py": False,
        "altair.vegalite": False,
        "great_expectations.expectations": True,
    }
    assert got["failed"] == [
        ["expect_column_values_to_be_in_set", "role", 1],
        ["expect_column_values_to_be_unique", "message_id", 2],
        ["expect_column_values_to_not_be_null", "thread_id", 1],
    ]
    assert got["ran_after_suite"] is False, "the project's suites must not need scipy.stats"
    assert got["kl"] == [True, "0.0"]
    assert got["ran_after_kl"] is True
