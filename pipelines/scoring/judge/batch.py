"""Bulk judging through the OpenAI Batch API: a JSONL input uploaded with ``files.create``, a batch
made with ``batches.create``, polled with ``batches.retrieve``, its output file downloaded.

Invariant: the batch in flight is recorded in ``batch.json`` in the cache folder before anything waits
on it, so a process that dies while the batch runs resumes it on the next run (same model and prompt
version) instead of paying for it twice. The file is removed only once the answers are in the cache.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai

from pipelines.scoring.judge.client import Answer, Request
from pipelines.scoring.judge.options import JudgeOptions
from pipelines.scoring.judge.parse import ReplyError, one_line, parse_reply
from pipelines.scoring.judge.prompt import PROMPT_VERSION, body

ENDPOINT = "/v1/chat/completions"
STATE_FILE = "batch.json"
_TERMINAL = {"completed", "failed", "expired", "cancelled"}


@dataclass
class BatchOutcome:
    answers: list[Answer]
    # Patterns of a batch still running when the poll gave up: resumed by the next run.
    pending: list[str]
    batch_id: str | None = None
    status: str = ""


def make_batch_client(options: JudgeOptions) -> openai.OpenAI:
    import openai  # only a run with a judge pays for importing the client (~0.5 s)

    # Few calls, each cheap to repeat: the client's own retries (which honour Retry-After) suffice.
    return openai.OpenAI(
        api_key=options.api_key(),
        base_url=options.base_url,
        max_retries=options.max_retries,
        timeout=options.timeout,
    )


class BatchRun:
    def __init__(
        self,
        options: JudgeOptions,
        folder: Path,
        client: openai.OpenAI | None = None,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self.folder = folder
        self.client = client if client is not None else make_batch_client(options)
        self.sleep = sleep
        self.log = log or (lambda _msg: None)

    @property
    def state_path(self) -> Path:
        return self.folder / STATE_FILE

    def _state(self) -> dict[str, Any] | None:
        if not self.state_path.exists():
            return None
        state = json.loads(self.state_path.read_text())
        same = state.get("model") == self.options.model and state.get("prompt_version") == PROMPT_VERSION
        return state if same else None

    def _save(self, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".{STATE_FILE}.tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_path)

    def clear(self) -> None:
        self.state_path.unlink(missing_ok=True)

    def _submit(self, requests: list[Request]) -> dict[str, Any]:
        lines = [
            json.dumps(
                {
                    "custom_id": r.pattern_id,
                    "method": "POST",
                    "url": ENDPOINT,
                    "body": body(self.options.model, r.task, r.code, structured=True),
                }
            )
            for r in requests
        ]
        uploaded = self.client.files.create(
            file=("judge.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch"
        )
        batch = self.client.batches.create(
            input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
        )
        state = {
            "batch_id": batch.id,
            "input_file_id": uploaded.id,
            "model": self.options.model,
            "prompt_version": PROMPT_VERSION,
            "pattern_ids": [r.pattern_id for r in requests],
            "est_tokens_in": {r.pattern_id: r.est_tokens_in for r in requests},
        }
        self._save(state)
        self.log(f"judge batch {batch.id} submitted ({len(requests)} patterns)")
        return state

    def run(self, requests: list[Request]) -> BatchOutcome:
        """Resume the recorded batch if there is one, else submit ``requests``; wait for it within the
        batch timeout. The caller records the answers, then calls :meth:`clear`."""
        state = self._state()
        if state is None:
            if not requests:
                return BatchOutcome([], [])
            state = self._submit(requests)
        else:
            self.log(f"judge batch {state['batch_id']} resumed")
        ids: list[str] = state["pattern_ids"]
        deadline = time.monotonic() + self.options.batch_timeout
        delay = self.options.batch_poll_seconds
        while True:
            batch = self.client.batches.retrieve(state["batch_id"])
            if batch.status in _TERMINAL:
                break
            if time.monotonic() + delay > deadline:
                return BatchOutcome([], ids, state["batch_id"], batch.status)
            self.sleep(delay)
            delay = min(delay * 1.5, 300.0)
        answers = self._collect(batch, ids, state.get("est_tokens_in", {}))
        return BatchOutcome(answers, [], state["batch_id"], batch.status)

    def _collect(self, batch: Any, ids: list[str], estimates: dict[str, int]) -> list[Answer]:
        found: dict[str, Answer] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for line in self.client.files.content(file_id).text.splitlines():
                if line.strip():
                    answer = _answer_of(line)
                    if answer is not None and answer.pattern_id in set(ids):
                        found.setdefault(answer.pattern_id, answer)
        missing = f"no answer in batch {batch.id} (status {batch.status})"
        return [found.get(p) or Answer(p, None, "", missing, 0, 0) for p in ids]


def _answer_of(line: str) -> Answer | None:
    try:
        item = json.loads(line)
        pattern_id = str(item["custom_id"])
    except (ValueError, KeyError, TypeError):
        return None
    response = item.get("response") or {}
    if item.get("error") or response.get("status_code", 200) != 200:
        error = item.get("error") or {"status_code": response.get("status_code")}
        return Answer(pattern_id, None, "", f"batch error: {one_line(json.dumps(error), 120)}", 0, 0)
    reply = response.get("body") or {}
    usage = reply.get("usage") or {}
    tokens_in, tokens_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    try:
        content = reply["choices"][0]["message"]["content"]
        score, reason = parse_reply(content)
    except (KeyError, IndexError, TypeError, ReplyError) as exc:
        return Answer(pattern_id, None, "", f"malformed reply: {exc}", tokens_in, tokens_out)
    return Answer(pattern_id, score, reason, None, tokens_in, tokens_out)
