"""PII redaction of task and code: what must be replaced, what must be left alone, the counts."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.load.redaction import KINDS, redact_frame, redact_series, redact_text

REDACTED = [
    # (kind, text, expected)
    ("email", "write to john.doe+billing@example.co.uk today", "write to [EMAIL] today"),
    ("email", "From: A.B_c-d@sub.mail-host.org", "From: [EMAIL]"),
    ("bearer", "Authorization: Bearer abcdef1234567890abcdef==", "Authorization: Bearer [TOKEN]"),
    (
        "bearer",
        'headers={"authorization": "bearer eyXz9_-~+/abcdefghij0"}',
        'headers={"authorization": "bearer [TOKEN]"}',
    ),
    ("api_key", "OPENAI_API_KEY=sk-proj-AbCdEfGhIjKlMnOpQrStUv123456", "OPENAI_API_KEY=[API_KEY]"),
    (
        "api_key",
        "client = OpenAI(api_key='sk-abcdefghijklmnopqrstuvwx')",
        "client = OpenAI(api_key='[API_KEY]')",
    ),
    (
        "api_key",
        "stripe sk_live_51HxYzAbCdEfGhIjKlMn and pk_test_AbCdEfGhIjKlMnOpQr",
        "stripe [API_KEY] and [API_KEY]",
    ),
    ("api_key", "aws AKIAIOSFODNN7EXAMPLE key", "aws [API_KEY] key"),
    ("api_key", "token ghp_" + "A1b2" * 9, "token [API_KEY]"),
    ("api_key", "slack xoxb-123456789012-abcdefghij", "slack [API_KEY]"),
    (
        "api_key",
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "jwt [API_KEY]",
    ),
    ("ipv4", "ssh admin@ 192.168.1.20 or 10.0.0.1.", "ssh admin@ [IPV4] or [IPV4]."),
    ("ipv4", "bind 0.0.0.0:8000 and 255.255.255.255", "bind [IPV4]:8000 and [IPV4]"),
    ("ipv4", "a bare quad 1.2.3.4 counts as an address", "a bare quad [IPV4] counts as an address"),
    ("ipv4", "ssh root@10.0.0.5 -p 22", "ssh root@[IPV4] -p 22"),
    ("ipv6", "fe80::1 and 2001:db8::ff00:42:8329", "[IPV6] and [IPV6]"),
    ("ipv6", "full 2001:0db8:85a3:0000:0000:8a2e:0370:7334 end", "full [IPV6] end"),
    ("ipv6", "mapped ::ffff:c000:0280 here", "mapped [IPV6] here"),
    ("phone", "call +44 20 7946 0958 or +1 (555) 123-4567", "call [PHONE] or [PHONE]"),
    (
        "phone",
        "sms +14155552671, office (555) 123-4567, cell 555-123-4567, fax 555.123.4567",
        "sms [PHONE], office [PHONE], cell [PHONE], fax [PHONE]",
    ),
    ("phone", "CZ +420 777 123 456", "CZ [PHONE]"),
]

KEPT = [
    "semantic version 1.2.3 and pip install requests==2.31.0",
    'four-part versions: v1.2.3.4, pkg==1.2.3.4, version 1.0.0.4, AssemblyVersion("1.0.0.0")',
    "five parts 1.2.3.4.5 and nine 1.2.3.4.5.6.7.8.9",
    "not an address: 256.1.1.1 or 999.10.10.10",
    "unix time 1717200000, an id 12345678901234, amount 1,234,567.89",
    "date 2024-01-15 at 12:30:45, Q2 churn 3.1% vs 2.4%",
    "mac 00:1a:2b:3c:4d:5e",
    "python a[1::2], b[10::3]; C++ std::vector<int>, Rust Foo::bar::baz, loopback ::1",
    "i+1000000 and x = 3 + 4 and 100 200 3000",
    "use bearer authentication with a Bearer YOUR_API_KEY placeholder",
    "scikit is sk-learn, the task-abcdefghijklmnopqrstuvwxyz1234 id",
    "decorator @property and matrix a@b.T",
    "Go to Billing > History and click the PDF icon next to the month you need.",
]


@pytest.mark.parametrize(("kind", "text", "expected"), REDACTED)
def test_redacts(kind, text, expected):
    assert redact_text(text) == expected
    _, counts = redact_frame(pl.DataFrame({"task": [text], "code": [""]}))
    assert counts[kind] >= 1
    assert sum(counts.values()) == expected.count("[")


@pytest.mark.parametrize("text", KEPT)
def test_keeps(text):
    assert redact_text(text) == text


def test_frame_redaction_is_per_column_counts_per_kind_and_keeps_nulls_and_other_columns():
    frame = pl.DataFrame(
        {
            "pattern_id": ["a", "b", "c"],
            "task": ["mail x@example.com", None, "host 10.1.2.3 and 10.1.2.4"],
            "code": ["Bearer abcdefghijklmnop1234", "nothing here", None],
            "eval_score": [5.0, 5.0, 5.0],
        }
    )
    out, counts = redact_frame(frame)
    assert out.columns == frame.columns and out.height == 3
    assert out["task"].to_list() == ["mail [EMAIL]", None, "host [IPV4] and [IPV4]"]
    assert out["code"].to_list() == ["Bearer [TOKEN]", "nothing here", None]
    assert counts == {"bearer": 1, "api_key": 0, "email": 1, "ipv4": 2, "ipv6": 0, "phone": 0}
    assert set(counts) == set(KINDS)
    empty, none = redact_frame(frame.clear())
    assert empty.height == 0 and sum(none.values()) == 0


def test_series_helper_matches_text_helper():
    values = pl.Series("task", ["a@b.io", "plain", "+1 555 123 4567"])
    assert redact_series(values).to_list() == [redact_text(v) for v in values]


_words = st.sampled_from(
    [
        "the",
        "x",
        "1.2.3",
        "v2",
        "::",
        "a[1::2]",
        "=",
        "@",
        "-",
        "2024-01-15",
        "12:30",
        "(",
        ")",
        "+",
        "42",
        ".",
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_words, max_size=30).map(" ".join))
def test_harmless_text_is_never_changed(text):
    assert redact_text(text) == text


@settings(max_examples=100, deadline=None)
@given(
    user=st.from_regex(r"[a-z][a-z0-9._]{0,15}", fullmatch=True),
    domain=st.from_regex(r"[a-z][a-z0-9-]{0,10}\.(com|org|io|co\.uk)", fullmatch=True),
    octets=st.lists(st.integers(0, 255), min_size=4, max_size=4),
    before=st.sampled_from(["", "see ", "(", "mail: ", "ip="]),
)
def test_generated_emails_and_addresses_never_survive_and_redaction_is_idempotent(
    user, domain, octets, before
):
    email = f"{user}@{domain}"
    ip = ".".join(map(str, octets))
    text = f"{before}{email} from {ip} done"
    out = redact_text(text)
    assert email not in out and ip not in out
    assert "[EMAIL]" in out and "[IPV4]" in out
    assert redact_text(out) == out
