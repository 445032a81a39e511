"""The verdict on each line of a dump: typed fields and scope columns for a good line, the first thing
wrong with it for a bad one.

DuckDB's JSON functions judge every line on its own (Polars' JSON decoder fails a whole column on one
bad line). One query per chunk parses each line three times at most (``json_valid``, then the types and
the unescaped values of all fields in one call each) and hands back typed rows as Arrow.

Invariant: the query returns exactly one row per input line, in line order; a row without a ``reason``
has both scope columns (``tenant_id``, ``project_id``), and a row with one keeps its line in ``raw_text``.
So every line is either staged in a scope or quarantined with its reason, never both and never neither,
except a good row with no ``assistant_id`` (allowed on every role but ``assistant``): it is ``pending``,
keeps its line in ``raw_text`` and gets its assistant (and so its scope) after the whole dump is classified
(:mod:`pipelines.ingest.assistants`).

Tolerances of real exports, each only evaluated on the lines that need it (the guide's own lines pay for
none of them): ``created_at`` as an ISO-8601 string (a zone-less time is UTC) or with fractional seconds;
``content`` (a string or a list of parts, whose ``text``, ``text.value`` less its annotation markers, or
``refusal`` are joined by a blank line, as the ``assistants-api`` reader does) where ``text`` is missing;
roles ``developer`` (staged as ``system``) and ``tool``.

Records of other shapes (:mod:`pipelines.ingest.records`) come through the same query as guide-shaped
lines with two more columns: ``forced`` (a reason set by their reader) and ``raw`` (their source text).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import duckdb
import polars as pl
import pyarrow as pa

from pipelines.scopes import ScopeBy, ScopeMapping, load_tenant_map

type JsonKind = Literal["string", "number"]

# Tool messages are staged like the others; pairing leaves them unpaired with a reason of their own.
ROLES = ("user", "assistant", "system", "developer", "tool")
# (json field, expected JSON kind) in the guide's export shape, in the order reasons are reported.
FIELDS: tuple[tuple[str, JsonKind], ...] = (
    ("thread_id", "string"),
    ("assistant_id", "string"),
    ("message_id", "string"),
    ("role", "string"),
    ("text", "string"),
    ("created_at", "number"),
)
# Unix seconds beyond this are certainly not a message time (year 2100); they would overflow timestamps.
_MAX_EPOCH = 4_102_444_800
# Text made only of these is blank (an "empty text" message, never paired). RE2's \s is ASCII only, so
# the rest of Unicode's White_Space is listed, as the quality checks' \S (Rust, Unicode) counts it, and
# zero-width space beside it: a task or answer of white space alone never reaches a pattern.
_BLANK = (
    r"[\s\x{000B}\x{001C}-\x{001F}\x{0085}\x{00A0}\x{1680}\x{2000}-\x{200B}"
    r"\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]*"
)


def _reason_sql(records: bool = False) -> str:
    """One SQL CASE that names the first thing wrong with a line, or NULL for a good one.

    ``t<i>`` is the JSON type of field i (NULL when absent), read from the line itself.
    """
    checks = [
        "WHEN bad_utf8 THEN 'invalid UTF-8'",
        # A line that trims to nothing is never valid JSON, so only invalid lines need trimming (a copy).
        (
            "WHEN NOT typed AND (line IS NULL OR (NOT valid AND trim(line) = '')) THEN 'empty line'"
            if records
            else "WHEN line IS NULL OR (NOT valid AND trim(line) = '') THEN 'empty line'"
        ),
        "WHEN NOT valid THEN 'malformed JSON'",
        "WHEN kind <> 'OBJECT' THEN 'not a JSON object'",
    ]
    for i, (name, _) in enumerate(FIELDS, start=1):
        if name == "assistant_id":
            # Only an answer must name its assistant; the others get theirs after classification.
            checks.append(
                f"WHEN (t{i} IS NULL OR t{i} = 'NULL') AND role = 'assistant' THEN 'missing field: {name}'"
            )
        elif name == "text":
            checks.append(f"WHEN text IS NULL AND (t{i} IS NULL OR t{i} = 'NULL') THEN 'missing field: text'")
        else:
            checks.append(f"WHEN t{i} IS NULL OR t{i} = 'NULL' THEN 'missing field: {name}'")
    for i, (name, kind) in enumerate(FIELDS, start=1):
        if name == "assistant_id":
            checks.append(
                f"WHEN t{i} NOT IN ('VARCHAR', 'NULL') THEN 'mistyped field: {name} must be a string'"
            )
        elif name == "text":
            checks.append(
                f"WHEN text IS NULL THEN 'mistyped field: {name} must be a string or content parts'"
            )
        elif kind == "string":
            checks.append(f"WHEN t{i} <> 'VARCHAR' THEN 'mistyped field: {name} must be a string'")
        else:
            checks.append(
                f"WHEN t{i} NOT IN ('BIGINT', 'UBIGINT', 'DOUBLE', 'VARCHAR') "
                f"THEN 'mistyped field: {name} must be unix seconds (a number) or an ISO-8601 time'"
            )
            # Past the type check only a string can fail to give a time (a JSON number always does).
            checks.append(
                f"WHEN created_epoch IS NULL "
                f"THEN 'mistyped field: {name} is not an ISO-8601 time: ' || left(s[{i}], 40)"
            )
    for name in ("thread_id", "assistant_id", "message_id"):
        checks.append(f"WHEN trim({name}) = '' THEN 'empty field: {name}'")
    checks.append(f"WHEN created_epoch < 0 OR created_epoch > {_MAX_EPOCH} THEN 'created_at out of range'")
    staged_roles = ", ".join(f"'{r}'" for r in ROLES)
    checks.append(f"WHEN role NOT IN ({staged_roles}) THEN 'unknown role: ' || left(role, 40)")
    checks.append(
        "WHEN tenant_id IS NULL AND (assistant_id IS NOT NULL OR map_tenant_needed) "
        "THEN 'thread_id has no tenant in the tenant map'"
    )
    return "CASE " + " ".join(checks) + " END"


# The text of a line without ``text``: its ``content``, a string or parts (``{"type": "text", "text":
# "..."}``, the Assistants API's ``{"text": {"value": "...", "annotations": [...]}}`` or ``{"type": "refusal",
# "refusal": "..."}``) joined by a blank line. It must give exactly what the ``assistants-api`` reader's
# ``message_text`` gives, or one message saved in both shapes would stage as a conflict: so each
# annotation's marker (a non-empty string ``text``) is removed from its part's value in annotation order,
# and only string values count. Lines with a plain ``text`` never evaluate this.
_CONTENT_TEXT = """CASE json_type(line, '$.content')
    WHEN 'VARCHAR' THEN json_extract_string(line, '$.content')
    WHEN 'ARRAY' THEN array_to_string(list_filter(list_transform(json_extract(line, '$.content[*]'),
        lambda p: CASE
            WHEN json_extract_string(p, '$.type') = 'refusal' THEN
                CASE WHEN json_type(p, '$.refusal') = 'VARCHAR' THEN json_extract_string(p, '$.refusal') END
            WHEN json_type(p, '$.text') = 'VARCHAR' THEN json_extract_string(p, '$.text')
            WHEN json_type(p, '$.text.value') = 'VARCHAR' THEN list_reduce(
                list_filter(list_transform(json_extract(p, '$.text.annotations[*]'),
                    lambda a: CASE WHEN json_type(a, '$.text') = 'VARCHAR'
                                   THEN json_extract_string(a, '$.text') END),
                    lambda m: m <> ''),
                lambda v, m: replace(v, m, ''), json_extract_string(p, '$.text.value'))
            END),
        lambda x: x IS NOT NULL), chr(10) || chr(10))
    END"""


def classify_sql(mapping: ScopeMapping, dump_id: str, seq: int, records: bool = False) -> str:
    """Typed fields, scope columns, a reason and (for bad lines only) the raw text of every line of
    the relation ``lines``, in line order.

    Each value is read straight from the line: ``json_type`` and ``json_extract_string`` with a list of
    paths parse the line once each, where extracting JSON values and asking each for its type and
    string would parse the long text field three more times. For numbers ``json_extract_string`` gives
    exactly the JSON text ``json_extract`` gives, so ``created_at`` goes through the same JSON -> DOUBLE
    cast as a plain JSON extraction.
    """
    paths = ", ".join(f"'$.{name}'" for name, _ in FIELDS)
    tenant_sql, project_sql = mapping.sql_columns()
    join = "LEFT JOIN tenant_map m USING (thread_id)" if mapping.scope_by is ScopeBy.TENANT else ""
    map_col = "m.tenant_id AS map_tenant" if mapping.scope_by is ScopeBy.TENANT else "NULL AS map_tenant"
    string_fields = ",\n".join(
        f"CASE WHEN t{i} = 'VARCHAR' THEN s[{i}] "
        + (
            f"WHEN kind = 'OBJECT' AND (t{i} IS NULL OR t{i} = 'NULL') THEN {_CONTENT_TEXT} "
            if name == "text"
            else ""
        )
        + f"END AS {name}"
        for i, (name, kind) in enumerate(FIELDS, start=1)
        if kind == "string"
    )
    needs_assistant = mapping.scope_by is ScopeBy.ASSISTANT
    has_scope = "thread_id IS NOT NULL" + (" AND assistant_id IS NOT NULL" if needs_assistant else "")
    # Records bring their reader's reason and source text; a guide line is its own source text.
    carried = "" if records else ", NULL AS forced, line AS raw"
    no_line = "NOT typed" if records else "true"
    # A guide line is always on the conversation's current branch; a record says which branch it is on.
    branch = "coalesce(branch, 'current')" if records else "'current'"
    # One column per field type: referring to list elements over and over costs a copy each time.
    type_columns = ", ".join(
        f"CASE WHEN types[1] = 'OBJECT' THEN types[{i + 1}] END AS t{i}" for i in range(1, len(FIELDS) + 1)
    )
    kind_sql, strings_sql, valid_sql = "types[1]", f"json_extract_string(line, [{paths}])", "json_valid(line)"
    # Only the rows that are kept as text need it: a typed record's text is made from its fields.
    raw_out = "raw"
    if records:
        # A typed record (pipelines.ingest.records) is an object whose fields have the types its
        # reader gave them: the same verdicts follow as from the JSON text of the same values.
        typed_types = [
            f"CASE WHEN c_{name} IS NOT NULL THEN '{'VARCHAR' if kind == 'string' else 'DOUBLE'}' END"
            for name, kind in FIELDS
        ]
        type_columns = ", ".join(
            f"CASE WHEN typed THEN {typed} WHEN types[1] = 'OBJECT' THEN types[{i}] END AS t{i - 1}"
            for i, typed in enumerate(typed_types, start=2)
        )
        typed_strings = ", ".join(
            f"c_{name}" if kind == "string" else f"CAST(c_{name} AS VARCHAR)" for name, kind in FIELDS
        )
        kind_sql = "CASE WHEN typed THEN 'OBJECT' ELSE types[1] END"
        strings_sql = f"CASE WHEN typed THEN [{typed_strings}] ELSE {strings_sql} END"
        valid_sql = "typed OR json_valid(line)"
        as_json = ", ".join(f"'{name}', c_{name}" for name, _ in FIELDS)
        raw_out = f"coalesce(raw, line, json_object({as_json})::VARCHAR)"
    created = len(FIELDS)
    dump_lit = "'" + dump_id.replace("'", "''") + "'"
    return f"""
        WITH parsed AS (
            SELECT *{carried},
                   CASE WHEN bad_utf8 OR (line IS NULL AND {no_line}) THEN NULL ELSE {valid_sql} END AS valid
            FROM lines
        ), typed_root AS (
            SELECT *, CASE WHEN valid AND line IS NOT NULL THEN json_type(line, ['$', {paths}]) END AS types
            FROM parsed
        ), fields AS (
            SELECT *, {kind_sql} AS kind, {type_columns},
                   CASE WHEN {kind_sql} = 'OBJECT' THEN {strings_sql} END AS s
            FROM typed_root
        ), typed_fields AS (
            SELECT *,
                   {string_fields},
                   CASE WHEN t{created} IN ('BIGINT', 'UBIGINT', 'DOUBLE')
                        THEN TRY_CAST(CAST(s[{created}] AS JSON) AS DOUBLE)
                        WHEN t{created} = 'VARCHAR'
                        THEN epoch_us(TRY_CAST(s[{created}] AS TIMESTAMPTZ)) / 1e6 END AS created_epoch
            FROM fields
        ), scoped AS (
            SELECT f.*, {map_col}, {str(mapping.scope_by is ScopeBy.TENANT).upper()} AS map_tenant_needed
            FROM typed_fields f {join}
        ), with_scope AS (
            SELECT *,
                   CASE WHEN {has_scope} THEN {tenant_sql} END AS tenant_id,
                   CASE WHEN {has_scope} THEN {project_sql} END AS project_id
            FROM scoped
        ), judged AS (
            SELECT *, CASE WHEN forced IS NOT NULL THEN forced ELSE {_reason_sql(records)} END AS reason
            FROM with_scope
        )
        SELECT message_id, thread_id, assistant_id,
               -- A developer message instructs like a system message, and is staged as one.
               CASE WHEN role = 'developer' THEN 'system' ELSE role END AS role, text,
               CASE WHEN reason IS NULL THEN make_timestamptz(CAST(created_epoch * 1000000 AS BIGINT)) END
                   AS created_at,
               CASE WHEN reason IS NULL THEN CAST(floor(created_epoch) AS BIGINT) END AS created_epoch,
               CASE WHEN reason IS NULL THEN length(text) END AS text_chars,
               CASE WHEN reason IS NULL THEN regexp_full_match(text, '{_BLANK}') END AS is_blank,
               tenant_id, project_id, {dump_lit} AS dump_id, CAST({seq} AS BIGINT) AS dump_seq, line_no,
               {branch} AS branch, reason,
               CASE WHEN reason IS NOT NULL THEN regexp_replace(reason, ':.*', '') END AS reason_kind,
               reason IS NULL AND assistant_id IS NULL AS pending,
               CASE WHEN reason IS NOT NULL OR assistant_id IS NULL THEN {raw_out} END AS raw_text
        FROM judged
        """


def classifier(con: duckdb.DuckDBPyConnection, mapping: ScopeMapping) -> duckdb.DuckDBPyConnection:
    """A connection of its own (temp tables, registered frames) to classify chunks on one thread."""
    cursor = con.cursor()
    cursor.execute("SET threads = 1")
    # ISO-8601 times without a zone are UTC, whatever the machine's zone.
    cursor.execute("SET TimeZone = 'UTC'")
    cursor.execute("SET preserve_insertion_order = true")
    # Strings leave DuckDB as large_string, the type the staged files are written with: no conversion.
    cursor.execute("SET arrow_large_buffer_size = true")
    if mapping.tenant_map is not None:
        load_tenant_map(cursor, Path(mapping.tenant_map))
    return cursor


def classify_chunk(con: duckdb.DuckDBPyConnection, lines: pl.DataFrame | pa.Table, sql: str) -> pa.Table:
    """Run the classification over one chunk's lines; the result keeps the line order."""
    con.register("lines", lines if isinstance(lines, pa.Table) else lines.to_arrow())
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.unregister("lines")
