"""An Engramia 0.7.x server in process (an ``httpx.MockTransport`` handler), for what the installed 0.6.6
cannot show: the near-duplicate rule of learn, recall's side effects, per-key rate limits and roles.

What it does as a real 0.7.x server does (measured against one built from the public repository):

- ``POST /v1/learn``: a stored pattern whose task has word Jaccard >= 0.92 with the new one
  (``set(task.lower().split())``) is a near-duplicate: a higher score overwrites it under its OLD key
  (``stored: true``, ``pattern_count`` unchanged), an equal or lower one is ``stored: false``. New keys
  are ``patterns/<sha256(task)[:8]>_<ms>_<rand6>``; every learned pattern carries ``_author_key_id``.
- ``POST /v1/recall``: fetches ``4 * limit`` candidates and marks every one of them
  (``reuse_count + 1``, ``success_score + 0.1``), then returns the best ``limit``.
- roles: reader (recall, metrics), editor (+ learn, delete own), admin/owner (+ import, export, delete).
- 429 ``RATE_LIMITED`` with ``Retry-After: 60`` past ``per_key_limit`` requests in a clock minute.
- 429 ``QUOTA_EXCEEDED``, ``current`` and ``limit`` under ``error_context``, once ``patterns_limit`` is hit.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

ROLES = {
    "reader": {"recall"},
    "editor": {"recall", "learn", "delete_own"},
    "admin": {"recall", "learn", "delete_own", "delete", "import", "export"},
    "owner": {"recall", "learn", "delete_own", "delete", "import", "export"},
}


def words(task: str) -> set[str]:
    return set(task.lower().split())


def jaccard(a: str, b: str) -> float:
    wa, wb = words(a), words(b)
    return len(wa & wb) / len(wa | wb) if wa | wb else 0.0


@dataclass
class Scripted07:
    role: str = "owner"
    key_id: str = "key_scripted"
    version: str = "0.7.1.dev40+g9ea12fb"
    per_key_limit: int | None = None
    patterns_limit: int | None = None
    quota_pct: float = 0.8
    clock: Callable[[], float] = time.time
    store: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    windows: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- direct access for tests --------------------------------------------------------------

    def seed(self, task: str, code: str, score: float, author: str = "someone_else") -> str:
        """A pattern another client stored before the load."""
        key = self._new_key(task)
        self.store[key] = self._record(key, task, code, score, author)
        return key

    def snapshot(self) -> bytes:
        return json.dumps(self.store, sort_keys=True).encode()

    def calls(self, path: str) -> int:
        return sum(1 for _m, p in self.requests if p == path)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    # -- the server ---------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append((request.method, request.url.path))
            window = int(self.clock() / 60)
            self.windows[window] += 1
            if self.per_key_limit is not None and self.windows[window] > self.per_key_limit:
                return httpx.Response(
                    429,
                    json={"error_code": "RATE_LIMITED", "detail": "Rate limit exceeded."},
                    headers={"Retry-After": "60"},
                )
            return self.answer(request)

    def _allowed(self, what: str) -> bool:
        return what in ROLES[self.role]

    def answer(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        body = json.loads(request.content) if request.content else {}
        if path == "/v1/version":
            return httpx.Response(200, json={"app_version": self.version, "api_version": "v1"})
        if path == "/v1/health":
            return httpx.Response(200, json={"status": "ok", "storage": "JSONStorage"})
        if path == "/v1/metrics":
            return httpx.Response(200, json={"pattern_count": len(self.store)})
        if path == "/v1/billing/status":
            return httpx.Response(
                200, json={"patterns_used": len(self.store), "patterns_limit": self.patterns_limit}
            )
        need = {
            "/v1/learn": "learn",
            "/v1/recall": "recall",
            "/v1/import": "import",
            "/v1/export": "export",
        }.get(path)
        if path.startswith("/v1/patterns/") and method == "DELETE":
            return self.delete(path.removeprefix("/v1/patterns/"))
        if need is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        if not self._allowed(need):
            return httpx.Response(403, json={"error_code": "FORBIDDEN", "detail": f"needs {need}"})
        if path == "/v1/export":
            records = [copy.deepcopy(r) for r in self.store.values()]
            return httpx.Response(200, json={"records": records, "count": len(records)})
        if path == "/v1/recall":
            return self.recall(body)
        if path == "/v1/learn":
            return self.learn(body)
        return self.import_(body)

    def _quota(self, adding: int) -> httpx.Response | None:
        if self.patterns_limit is None:
            return None
        cap = int(self.patterns_limit * self.quota_pct)
        current = len(self.store) + adding
        if current >= cap:
            # the body Engramia's error handler (api/app.py _build_error_body) makes of the route's detail
            body = {
                "error_code": "QUOTA_EXCEEDED",
                "detail": "full",
                "error_context": {"current": current, "limit": cap},
            }
            return httpx.Response(429, json=body)
        return None

    def learn(self, body: dict[str, Any]) -> httpx.Response:
        if not body.get("task") or not body.get("code"):
            return httpx.Response(422, json={"error_code": "VALIDATION_ERROR", "detail": "task, code"})
        if refused := self._quota(0):
            return refused
        task, score = body["task"], float(body["eval_score"])
        dup = next((k for k, r in self.store.items() if jaccard(r["data"]["task"], task) >= 0.92), None)
        if dup is not None and score <= float(self.store[dup]["data"]["success_score"]):
            return httpx.Response(200, json={"stored": False, "pattern_count": len(self.store)})
        key = dup or self._new_key(task)
        self.store[key] = self._record(key, task, body["code"], score, self.key_id)
        return httpx.Response(200, json={"stored": True, "pattern_count": len(self.store)})

    def recall(self, body: dict[str, Any]) -> httpx.Response:
        limit = int(body.get("limit") or 5)
        ranked = sorted(
            self.store.items(), key=lambda kv: jaccard(kv[1]["data"]["task"], body["task"]), reverse=True
        )
        fetched = ranked[: 4 * limit]
        for _key, rec in fetched:  # 0.7.x marks every pattern it fetched, returned or not
            rec["data"]["reuse_count"] += 1
            rec["data"]["success_score"] = round(rec["data"]["success_score"] + 0.1, 6)
        matches = []
        for key, rec in fetched[:limit]:
            sim = jaccard(rec["data"]["task"], body["task"])
            tier = "duplicate" if sim >= 0.92 else "adapt" if sim >= 0.7 else "fresh"
            pattern = {"task": rec["data"]["task"], "code": rec["data"]["design"]["code"]}
            matches.append({"similarity": sim, "reuse_tier": tier, "pattern_key": key, "pattern": pattern})
        return httpx.Response(200, json={"matches": matches})

    def import_(self, body: dict[str, Any]) -> httpx.Response:
        records, overwrite = body.get("records") or [], bool(body.get("overwrite"))
        new = [r for r in records if overwrite or r["key"] not in self.store]
        if refused := self._quota(len(new)):
            return refused
        for r in new:
            self.store[r["key"]] = copy.deepcopy(r)
        return httpx.Response(200, json={"imported": len(new), "total": len(records)})

    def delete(self, key: str) -> httpx.Response:
        rec = self.store.get(key)
        if not self._allowed("delete"):
            mine = rec is None or rec["data"].get("_author_key_id") == self.key_id
            if not (self._allowed("delete_own") and mine):
                return httpx.Response(403, json={"error_code": "FORBIDDEN", "detail": "not yours"})
        deleted = self.store.pop(key, None) is not None
        return httpx.Response(200, json={"deleted": deleted, "pattern_key": key})

    def _new_key(self, task: str) -> str:
        sha = hashlib.sha256(task.encode()).hexdigest()[:8]
        return f"patterns/{sha}_{int(self.clock() * 1000)}_{secrets.token_hex(3)}"

    @staticmethod
    def _record(key: str, task: str, code: str, score: float, author: str) -> dict[str, Any]:
        data = {
            "task": task,
            "design": {"code": code, "classification": "internal", "source": "api"},
            "success_score": score,
            "reuse_count": 0,
            "timestamp": 1_764_000_000.0,
            "_author_key_id": author,
        }
        return {"version": 1, "key": key, "data": data}
