"""The contract every input shape implements: a reader turns one file into canonical records.

A *reader* knows one shape of saved conversation data (the guide's NDJSON, Assistants API
``thread.message`` objects, saved ``messages.list`` pages, a ChatGPT export, ...). It tells from the first
bytes of a file whether the file is its shape (:meth:`Reader.detect`) and turns the file into
:class:`Record` dicts (:meth:`Reader.read`), one per message it finds, in file order.

The contract, which the staging checks per dump (records = staged + quarantined):

- Every record a reader yields ends as exactly one staged message, an exact repeat of one, or a
  quarantined row with the file, the record's ``position`` and a reason. A reader never drops a
  message silently: something it cannot use (a malformed element, a non-message item it was asked to
  keep track of, a message the user never saw) is yielded with ``quarantine`` set to the reason.
  Items that are not messages at all (a ``function_call`` item, a page's envelope) are not records.
- Fields are validated after the reader, as for the guide's lines: a missing or mistyped ``thread_id``,
  ``message_id``, ``role`` or ``text`` quarantines the record with the usual reason
  (``missing field: X``, ``unknown role: X``, ...), so a reader passes values through rather than
  guessing them.
- Readers stream: memory stays bounded whatever the file size (they never read a whole file; JSON
  arrays are read element by element, see :mod:`pipelines.ingest.formats.stream`).
- ``order`` orders a thread's records of one file when ``created_at`` ties or is missing; a reader of a
  newest-first source yields it negative (``-index``), so that ascending ``order`` is the conversation's
  order. Omitted, it is the record's index in the file (1, 2, ...).
- ``created_at`` is unix seconds (int or float; ISO-8601 strings are accepted, a zone-less time is UTC),
  or None when the source only knows the order: the message is then staged at unix time 0
  (1970-01-01T00:00:00Z, marked ``timed = false`` in the record table) and its thread is ordered by
  ``order`` alone. ``order`` must be unique within a file.
- ``assistant_id`` may be None on any role but ``assistant``: the staging gives such a message the
  assistant that answered it (the next assistant message of its thread), else the thread's last
  assistant (see :mod:`pipelines.ingest.assistants`).
- ``branch`` "abandoned" (an edited or regenerated message the user moved away from) is staged with
  its branch and left unpaired by pairing (reason ``abandoned branch``); "current" is the default.

- Options a user gives for a shape (:class:`ReaderOptions`, e.g. ``--assistant-name``) are read by the
  reader from :func:`reader_options`; a run sets them once before it ingests (:func:`set_reader_options`,
  or :func:`using_reader_options` around a call), so :meth:`Reader.read` keeps its signature.

A module under this package becomes a format by defining ``READERS``, a tuple of readers; the
registry (:data:`FORMATS`, :func:`detect_format`) imports every module of the package, so adding a
shape touches no shared file. Detection tries readers by ascending ``priority`` (specific shapes
before generic ones) and then by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Literal, NotRequired, Protocol, TypedDict

type Branch = Literal["current", "abandoned"]

# Bytes of (decompressed) content a reader's detect() sees.
HEAD_BYTES = 64 * 1024

# Kinds (the text before ":") of the reasons of records a shape leaves out by design, not because the
# file is faulty: a message the user never saw, tool traffic (and abandoned branches, which earlier
# versions quarantined). They are quarantined and counted like any other, but do not count toward a
# run's share of bad lines.
LEFT_OUT_KINDS = frozenset(
    ("abandoned branch", "hidden message", "tool message", "tool call", "not a text message")
)


class PartCounts(TypedDict, total=False):
    """What a message held besides its text, counted (the text of text parts is in ``text``)."""

    images: int  # image_file / image_url / input_image parts, image asset pointers
    files: int  # file parts (ChatGPT file pointers, input_file)
    attachments: int  # message attachments (Assistants ``attachments``)
    annotations: int  # citations and file paths in text parts
    other: int  # any other non-text part (refusal text is kept in ``text``)


class Record(TypedDict):
    """One message as a reader found it; see the module docstring for what becomes of it."""

    thread_id: str | None
    assistant_id: str | None
    message_id: str | None
    role: str | None  # user | assistant | system | developer | tool (others are quarantined)
    text: str | None
    created_at: int | float | str | None
    # Where the record is in its file: "line 12", or a JSON path such as "$[3].mapping.<node>.message".
    position: str
    run_id: NotRequired[str | None]
    order: NotRequired[int]
    branch: NotRequired[Branch]
    parts: NotRequired[PartCounts]
    # A reason that sends the record to quarantine as it is (validation is skipped).
    quarantine: NotRequired[str]
    # The source text of the record, kept in the quarantine row when it is quarantined (default: the
    # record itself as JSON).
    raw: NotRequired[str]


# Raw text kept in a quarantine row (a whole conversation can be megabytes).
RAW_LIMIT = 100_000


def cut_raw(raw: str) -> str:
    """``raw`` as it is, or its first :data:`RAW_LIMIT` characters and a note that says the rest was cut:
    a reader of the quarantine must not take a cut text for the whole record."""
    if len(raw) <= RAW_LIMIT:
        return raw
    return f"{raw[:RAW_LIMIT]} [cut: the first {RAW_LIMIT:,} of {len(raw):,} characters]"


def quarantined(position: str, raw: str, reason: str) -> Record:
    """A record that holds no usable message: it is counted, and quarantined with ``reason``."""
    return Record(
        thread_id=None,
        assistant_id=None,
        message_id=None,
        role=None,
        text=None,
        created_at=None,
        position=position,
        quarantine=reason,
        raw=raw,
    )


class Reader(Protocol):
    """One input shape."""

    name: str  # the --format value, e.g. "assistants-messages"
    description: str  # one line for --help and errors: what the shape is and where users get it
    priority: int  # detection order: lower first; generic shapes (the guide's NDJSON) last

    def detect(self, head: bytes, name: str) -> bool:
        """Whether a file whose content starts with ``head`` (up to :data:`HEAD_BYTES`, decompressed,
        possibly cut mid-record) and whose file name is ``name`` is this shape."""
        ...

    def read(self, stream: BinaryIO, name: str) -> Iterator[Record]:
        """Every message of the file as records, in file order, streaming from ``stream`` (binary,
        decompressed, positioned at the start)."""
        ...


class UnknownFormat(ValueError):
    """A file whose shape no reader recognises."""

    def __init__(self, path: str, known: list[str]) -> None:
        super().__init__(
            f"{path}: unknown input format; known formats: {', '.join(known)} (or force one with --format)"
        )
        self.path = path
        self.known = known


@dataclass(frozen=True)
class ReaderOptions:
    """What a user says about files whose shape does not carry it."""

    # The assistant of shapes that name none (ChatGPT exports name the model, ShareGPT and Chat
    # Completions files nothing): the scope under --scope-by assistant.
    assistant_name: str | None = None


# Process-wide rather than a context variable: readers run on whatever thread the staging uses, and a run
# ingests with one set of options.
_options = ReaderOptions()


def reader_options() -> ReaderOptions:
    return _options


def set_reader_options(options: ReaderOptions) -> None:
    global _options
    _options = options


@contextmanager
def using_reader_options(options: ReaderOptions) -> Iterator[None]:
    """``options`` in force for the block, the previous ones restored after it."""
    before = _options
    set_reader_options(options)
    try:
        yield
    finally:
        set_reader_options(before)
