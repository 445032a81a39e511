"""The conversations every input shape is written from (:mod:`pipelines.tools.shapes`,
:mod:`pipelines.tools.shapes_chat`): what real exports exercise, in one small, fixed set.

The conversations exercise ties in ``created_at``, follow-ups before an answer, one run writing two
messages, a thread answered by two assistants, a last turn nobody answered, citation markers, images and
attachments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

T0 = 1_717_200_000
MARKER = "【4:0†source】"


@dataclass(frozen=True)
class Message:
    message_id: str
    role: str  # user | assistant
    text: str
    created_at: int
    assistant_id: str  # the assistant of the exchange (the API leaves it null on user messages)
    run_id: str | None = None
    cited: bool = False  # an assistant text with a citation marker (removed by the readers)
    images: int = 0
    attachments: int = 0


@dataclass(frozen=True)
class Conversation:
    thread_id: str
    messages: list[Message] = field(default_factory=list)


def conversations() -> list[Conversation]:
    """A few threads covering ties, follow-ups, multi-message runs, two assistants, an open last turn."""
    a, b = "asst_coder", "asst_review"
    return [
        Conversation(
            "thread_ties",
            [
                Message("m1", "user", "Build a CSV parser", T0, a),
                Message("m2", "assistant", "Here is a parser.", T0, a, "run_1", cited=True),
                Message("m3", "user", "Add quoting", T0, a, images=1),
                Message("m4", "assistant", "Quoting added.", T0, a, "run_2"),
                Message("m5", "assistant", "And tests.", T0, a, "run_2", attachments=2),
            ],
        ),
        Conversation(
            "thread_two_assistants",
            [
                Message("n1", "user", "Write a sort", T0 + 10, a),
                Message("n2", "assistant", "def sort(x): ...", T0 + 11, a, "run_a"),
                Message("n3", "user", "Review it", T0 + 20, b),
                Message("n4", "user", "Be strict", T0 + 20, b),
                Message("n5", "assistant", "Looks fine.", T0 + 21, b, "run_b"),
                Message("n6", "user", "Thanks, one more thing", T0 + 30, b),
            ],
        ),
    ]


type ShapeWriter = Callable[[list[Conversation], Path], list[Path]]
