"""The teacher in batch mode: the prompts a stage still needs, answered by batch jobs instead of one
request each, into the same response cache; the stage then runs exactly as from a warm cache.

OpenAI's Batch API answers a JSONL file of requests within 24 hours at half the price (at most
50,000 requests and 200 MB a file), and vLLM's `run-batch` reads and writes the same format, so one
request file serves a paid API and a local GPU alike (params.yaml `teacher.batch`, `BatchConfig`):

- `mode: api` uploads each file (`/v1/files`, purpose "batch"), submits it (`/v1/batches`), polls it
  every `poll_interval` seconds and reads its output file back into the cache;
- `mode: files` writes the files to `folder` and stops, with the command that answers them offline:
      vllm run-batch -i <folder>/<name>.jsonl -o <folder>/<name>.results.jsonl --model <model>
  a re-run reads each results file that is there into the cache.

One line a request, its `custom_id` the response-cache key, its body the request the streaming path
would send. Every batch is recorded in the cache's sqlite file (its id, and the keys it holds) as soon
as it is submitted: a run killed between submission and download waits for the same batches when it
runs again, and pays for nothing twice. Lines that failed are counted (`batch_failed`) and left out of
the cache, so the streaming path asks them, with its retries, when the stage runs.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from alia.core.io import write_text
from alia.llm.cache import answer_record

if TYPE_CHECKING:
    from alia.llm.client import LLMClient

ENDPOINT = "/v1/chat/completions"
DONE = {"completed", "failed", "expired", "cancelled"}


class BatchConfig(BaseModel):
    """params.yaml `teacher.batch`."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    mode: Literal["api", "files"] = "api"
    folder: str = "logs/batches"  # mode files: where the request and results files are
    max_requests: Annotated[int, Field(ge=1)] = 50_000  # a batch file's limits (OpenAI's)
    max_bytes: Annotated[int, Field(ge=1)] = 200_000_000
    poll_interval: Annotated[float, Field(gt=0)] = 60.0  # seconds between status checks
    completion_window: Literal["24h"] = "24h"
    # what the batch saved: the streaming price per million tokens, and the batch's discount on it
    price_per_1m_prompt_tokens: Annotated[float, Field(ge=0)] = 0.0
    price_per_1m_completion_tokens: Annotated[float, Field(ge=0)] = 0.0
    discount: Annotated[float, Field(ge=0, le=1)] = 0.5


class Ledger:
    """The batches a cache's requests were submitted in (tables beside the cache's responses)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        db.execute(
            "CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, mode TEXT, created REAL, done REAL)"
        )
        db.execute("CREATE TABLE IF NOT EXISTS batch_requests (key TEXT PRIMARY KEY, batch TEXT)")
        db.commit()

    def record(self, batch: str, mode: str, keys: list[str]) -> None:
        self.db.execute("INSERT INTO batches VALUES (?, ?, ?, NULL)", (batch, mode, time.time()))
        self.db.executemany("INSERT OR REPLACE INTO batch_requests VALUES (?, ?)", [(k, batch) for k in keys])
        self.db.commit()

    def held(self, keys: list[str]) -> dict[str, tuple[str, str, float | None]]:
        """{key: (batch id, mode, when read back or None)} of `keys` that a batch held."""
        found: dict[str, tuple[str, str, float | None]] = {}
        for start in range(0, len(keys), 500):  # sqlite's limit on a statement's variables
            chunk = keys[start : start + 500]
            rows = self.db.execute(
                "SELECT r.key, b.id, b.mode, b.done FROM batch_requests r JOIN batches b ON b.id = r.batch "
                f"WHERE r.key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update({key: (batch, mode, done) for key, batch, mode, done in rows})
        return found

    def keys(self, batch: str) -> set[str]:
        return {key for (key,) in self.db.execute("SELECT key FROM batch_requests WHERE batch = ?", (batch,))}

    def close(self, batch: str) -> None:
        self.db.execute("UPDATE batches SET done = ? WHERE id = ?", (time.time(), batch))
        self.db.commit()


def request_lines(model: str, requests: dict[str, tuple[list, dict]]) -> list[str]:
    """One Batch API line per request: {custom_id, method, url, body}, body as the streaming path sends it."""
    return [
        json.dumps(
            {
                "custom_id": key,
                "method": "POST",
                "url": ENDPOINT,
                "body": {"model": model, "messages": messages, **sampling},
            }
        )
        for key, (messages, sampling) in requests.items()
    ]


def split(lines: list[str], max_requests: int, max_bytes: int) -> list[list[str]]:
    """Lines in files of at most `max_requests` lines and `max_bytes` bytes."""
    files: list[list[str]] = [[]]
    size = 0
    for line in lines:
        length = len(line.encode()) + 1
        if files[-1] and (len(files[-1]) >= max_requests or size + length > max_bytes):
            files.append([])
            size = 0
        files[-1].append(line)
        size += length
    return [f for f in files if f]


def run_batches(client: LLMClient, prompts: Sequence[list[dict]], request: dict[str, Any]) -> None:
    """Answer by batches every prompt of `prompts` that the cache does not hold (see the module
    docstring); nothing is returned: the answers are in the cache."""
    config = client.config.batch
    if config.mode == "api" and client.config.base_url == "local":
        from alia.llm.client import LLMError

        raise LLMError(
            "teacher.batch.mode api: the local llama.cpp server has no Batch API (mode files, or off)"
        )
    requests: dict[str, tuple[list, dict]] = {}
    for messages in prompts:
        key, sampling = client._request_key(messages, request)
        if key not in requests and client.cache.get(key) is None:
            requests[key] = (messages, sampling)
    if not requests:
        return
    ledger = Ledger(client.cache.db)
    held = ledger.held(list(requests))
    # a batch submitted by a run that did not see it through is waited for, not paid for again
    waiting = {batch: mode for batch, mode, done in held.values() if done is None}
    # and a line that failed in a batch already read back goes to the streaming path, not a new batch
    new = {k: v for k, v in requests.items() if k not in held}
    for lines in split(request_lines(client.config.model, new), config.max_requests, config.max_bytes):
        keys = [json.loads(line)["custom_id"] for line in lines]
        batch = asyncio.run(_submit(client, lines)) if config.mode == "api" else _write(config.folder, lines)
        ledger.record(batch, config.mode, keys)  # before waiting: a crash from here on resumes it
        waiting[batch] = config.mode
        client.stats["batch_requests"] += len(lines)
    if not waiting:
        return
    tqdm.write(
        f"teacher batch: {len(requests)} requests in {len(waiting)} batch(es) ({config.mode})",
        file=sys.stderr,
    )
    unanswered = []
    for batch, mode in waiting.items():
        results = asyncio.run(_wait(client, batch)) if mode == "api" else _results(batch)
        if results is None:  # mode files: not answered yet
            unanswered.append(batch)
            continue
        answered = _read(client, results, requests)
        # lines that failed, and every line of a batch that failed or expired whole
        client.stats["batch_failed"] += len((ledger.keys(batch) & requests.keys()) - answered)
        ledger.close(batch)
    if unanswered:
        from alia.llm.client import LLMError

        model = client.config.model
        commands = "\n".join(
            f"  vllm run-batch -i {b} -o {results_name(b)} --model {model}" for b in unanswered
        )
        raise LLMError(
            f"teacher.batch.mode files: answer {len(unanswered)} batch file(s), then run again:\n{commands}"
        )


async def _submit(client: LLMClient, lines: list[str]) -> str:
    api = client._ensure_client()  # the client's own connection (and local or simulated server)
    try:
        upload = await api.files.create(
            file=("requests.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch"
        )
        batch = await api.batches.create(
            input_file_id=upload.id,
            endpoint=ENDPOINT,
            completion_window=client.config.batch.completion_window,
        )
        return batch.id
    finally:
        await client._close_client()


async def _wait(client: LLMClient, batch_id: str) -> list[dict]:
    """The batch's result lines (output and error files), once it is done."""
    api = client._ensure_client()  # the client's own connection (and local or simulated server)
    try:
        while (batch := await api.batches.retrieve(batch_id)).status not in DONE:
            await asyncio.sleep(client.config.batch.poll_interval)
        if batch.status != "completed":  # its lines go to the streaming path
            tqdm.write(f"teacher batch {batch_id}: {batch.status} ({batch.errors})", file=sys.stderr)
        lines = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await api.files.content(file_id)
                lines += [json.loads(line) for line in content.text.splitlines() if line.strip()]
        return lines
    finally:
        await client._close_client()


def _write(folder: str, lines: list[str]) -> str:
    """mode files: the request file, named by its first request's key; its path is the batch id."""
    path = Path(folder) / f"requests-{json.loads(lines[0])['custom_id'][:16]}.jsonl"
    write_text(path, "\n".join(lines) + "\n")
    return str(path)


def results_name(batch: str) -> str:
    """Where mode files expects the results of request file `batch`."""
    return batch.removesuffix(".jsonl") + ".results.jsonl"


def _results(batch: str) -> list[dict] | None:
    path = Path(results_name(batch))
    if not path.exists():
        return None
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read(client: LLMClient, results: list[dict], requests: dict[str, tuple[list, dict]]) -> set[str]:
    """Each answered line into the cache, as the streaming path would have written it; the keys
    answered. Tokens are counted as spent, and what they would have cost streaming as saved."""
    from openai.types.chat import ChatCompletion

    prices, answered = client.config.batch, set()
    for line in results:
        key, response = line.get("custom_id"), line.get("response") or {}
        if key not in requests:  # another stage's request in the same batch: its own run reads it
            continue
        if line.get("error") or response.get("status_code") != 200:
            continue
        answer = answer_record(ChatCompletion.model_validate(response["body"]))
        messages, sampling = requests[key]
        client.cache.put(key, client.config.model, messages, sampling, answer)
        client.stats["batch_answers"] += 1
        answered.add(key)
        client.stats["new_prompt_tokens"] += answer["prompt_tokens"]
        client.stats["new_completion_tokens"] += answer["completion_tokens"]
        cost = answer["prompt_tokens"] * prices.price_per_1m_prompt_tokens
        cost += answer["completion_tokens"] * prices.price_per_1m_completion_tokens
        client.stats["batch_saved_microusd"] += round(cost * prices.discount)
    return answered
