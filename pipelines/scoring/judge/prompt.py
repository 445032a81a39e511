"""The versioned rubric the judge is asked with, and the request it makes for one pattern.

Invariant: :data:`PROMPT_VERSION` names the rubric file's content; cached answers are keyed by it, so
editing the rubric means a new file and a new version (answers under the old one are never reused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROMPT_VERSION = "rubric-v1"
RUBRIC = (Path(__file__).with_name("rubric_v1.txt")).read_text(encoding="utf-8")
# Answers are short JSON objects; the limit bounds the cost of a rambling model.
MAX_ANSWER_TOKENS = 120
# The answer's estimated size, for plans and the cost limit before the real usage is known.
EST_ANSWER_TOKENS = 40

RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "pattern_grade",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "score": {"type": "number", "minimum": 0, "maximum": 10},
                "reason": {"type": "string"},
            },
            "required": ["score", "reason"],
            "additionalProperties": False,
        },
    },
}


def messages(task: str, code: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": RUBRIC},
        {"role": "user", "content": f"<task>\n{task}\n</task>\n<answer>\n{code}\n</answer>"},
    ]


def estimate_tokens(task: str, code: str) -> int:
    """Prompt tokens, roughly (4 characters a token, as OpenAI's rule of thumb for English)."""
    return (len(RUBRIC) + len(task) + len(code) + 40) // 4 + 8


def body(model: str, task: str, code: str, structured: bool) -> dict[str, Any]:
    """The Chat Completions request body (also one line of a batch input file)."""
    out: dict[str, Any] = {
        "model": model,
        "messages": messages(task, code),
        "temperature": 0,
        "max_tokens": MAX_ANSWER_TOKENS,
    }
    if structured:
        out["response_format"] = RESPONSE_SCHEMA
    return out
