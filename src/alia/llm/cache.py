"""The teacher's response cache: a sqlite file of answered requests, one row per request.

A request's key is a hash of (model, messages, sampling params and request fields): the same request
is never paid for twice. Each answer is committed as it arrives, so a crash loses nothing. Each row
records the endpoint that gave it: an answer of another endpoint is no answer for this one (a different
model may serve under the same name), unless the cache is shared on purpose (replicas of one model).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

Message = dict[str, str]


def cache_key(model: str, messages: Sequence[Message], sampling: dict[str, Any]) -> str:
    payload = json.dumps({"model": model, "messages": list(messages), "sampling": sampling}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def answer_record(response: Any) -> dict[str, Any]:
    """What the cache keeps of a chat completion (streamed, or a line of a batch's results)."""
    choice, usage = response.choices[0], response.usage
    first = choice.logprobs.content[0] if choice.logprobs and choice.logprobs.content else None
    return {
        "text": choice.message.content or "",
        "finish_reason": choice.finish_reason or "",
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "tool_calls": [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in choice.message.tool_calls or []
        ],
        "top_logprobs": [[t.token, t.logprob] for t in first.top_logprobs] if first else [],
    }


class ResponseCache:
    """A sqlite file of answered requests. Each answer is committed as it arrives, recorded as
    `endpoint`'s; `get` serves only those (and those of a cache older than the record), unless
    `shared`."""

    def __init__(self, path: str | Path, endpoint: str | None = None, shared: bool = False):
        self.path, self.endpoint, self.shared = Path(path), endpoint, shared
        self.other_endpoint = 0  # answers found but not served: another endpoint gave them
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        # Write-ahead log, synced at checkpoints: a commit is an append (microseconds where a
        # journal's fsync took milliseconds, the pace a fast endpoint answers at) and still
        # survives the process being killed; only a power cut can lose the last answers.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, messages TEXT, "
            "sampling TEXT, text TEXT, finish_reason TEXT, prompt_tokens INTEGER, "
            "completion_tokens INTEGER, created REAL, tool_calls TEXT, top_logprobs TEXT, endpoint TEXT)"
        )
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(responses)")}
        for column in ("tool_calls", "top_logprobs", "endpoint"):  # a cache written before they were kept
            if column not in columns:
                self.db.execute(f"ALTER TABLE responses ADD COLUMN {column} TEXT")
        self.db.commit()

    def get(self, key: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT text, finish_reason, prompt_tokens, completion_tokens, tool_calls, top_logprobs, "
            "endpoint FROM responses WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        if row[-1] not in (None, self.endpoint) and not self.shared:
            if not self.other_endpoint:  # said once a run, in one line
                tqdm.write(
                    f"{self.path}: holds answers of {row[-1]}, not of {self.endpoint}: asking again "
                    "(teacher.share_cache_across_endpoints: true shares a cache between replicas of a model)",
                    file=sys.stderr,
                )
            self.other_endpoint += 1
            return None
        names = ("text", "finish_reason", "prompt_tokens", "completion_tokens", "tool_calls", "top_logprobs")
        answer = dict(zip(names, row[:-1], strict=True))
        for name in ("tool_calls", "top_logprobs"):  # JSON lists, NULL when empty
            answer[name] = json.loads(answer[name]) if answer[name] else []
        return answer

    def put(self, key: str, model: str, messages: Sequence[Message], sampling: dict, answer: dict) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO responses (key, model, messages, sampling, text, finish_reason, "
            "prompt_tokens, completion_tokens, created, tool_calls, top_logprobs, endpoint) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                model,
                json.dumps(list(messages)),
                json.dumps(sampling),
                answer["text"],
                answer["finish_reason"],
                answer["prompt_tokens"],
                answer["completion_tokens"],
                time.time(),
                json.dumps(answer["tool_calls"]) if answer.get("tool_calls") else None,
                json.dumps(answer["top_logprobs"]) if answer.get("top_logprobs") else None,
                self.endpoint,
            ),
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()
