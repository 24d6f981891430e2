"""The simulated endpoint beyond plain chat answers (alia.llm.simulated): the scripted tool-calling
policy, and OpenAI's Batch API.

Tool calls: a request that sends `tools` gets the calls `tool_script` lists for its task (matched by
the task's text in the first user message), one a turn, then `final_answer` naming the items of the
observations it was given.

Batches: `POST /v1/files` stores an uploaded JSONL file, `POST /v1/batches` submits one, `GET
/v1/batches/{id}` reports it "in_progress" until `batch_delay` seconds have passed and then
"completed" with an output file (each line answered as the chat endpoint answers the same request)
and, where `rate_batch_failed` drew any, an error file; `GET /v1/files/{id}/content` returns a file.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from alia.llm.simulated import SimulatedTeacher


def request_key(body: dict) -> str:
    """A request's identity, however its JSON was spelled (streamed by the openai client, or a line of
    a batch file)."""
    return hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=16).hexdigest()


def tool_call_message(messages: list[dict], script: dict[str, list[dict]]) -> dict:
    """The assistant message of the scripted tool-calling policy (see the module docstring)."""
    users = [str(m.get("content") or "") for m in messages if m.get("role") not in ("system", "assistant")]
    task = next((u for u in users if u), "")
    calls = next((c for key, c in script.items() if key in task), [])
    turn = sum(m.get("role") == "assistant" for m in messages)
    if turn < len(calls):
        name, arguments = calls[turn]["name"], calls[turn]["arguments"]
    else:  # everything the tools returned, in order, once
        items = re.findall(r"'item': '([^']+)'", "\n".join(users[1:]))
        name, arguments = "final_answer", {"answer": ", ".join(dict.fromkeys(items)) or "nothing found"}
    call = {
        "id": f"call_{turn}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }
    return {"role": "assistant", "content": None, "tool_calls": [call]}


class BatchEndpoints:
    """Files and batches in memory, for one server's life (see the module docstring)."""

    def __init__(self, teacher: SimulatedTeacher) -> None:
        self.teacher = teacher
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}

    def add_routes(self, app: web.Application) -> None:
        app.add_routes(
            [
                web.post("/v1/files", self.upload),
                web.get("/v1/files/{id}/content", self.content),
                web.post("/v1/batches", self.submit),
                web.get("/v1/batches/{id}", self.status),
            ]
        )

    def _store(self, data: bytes) -> str:
        file_id = f"file-{hashlib.blake2b(data, digest_size=8).hexdigest()}-{len(self.files)}"
        self.files[file_id] = data
        return file_id

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        data = form["file"].file.read()
        file_id = self._store(data)
        return web.json_response(
            {
                "id": file_id,
                "object": "file",
                "bytes": len(data),
                "created_at": int(time.time()),
                "filename": form["file"].filename,
                "purpose": form.get("purpose", "batch"),
            }
        )

    async def content(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["id"])
        if data is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=data, content_type="application/jsonl")

    async def submit(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("input_file_id") not in self.files:
            return web.json_response({"error": {"message": "no such input file"}}, status=400)
        batch_id = f"batch_{len(self.batches):06d}"
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"],
            "created_at": int(time.time()),
            "status": "in_progress",
            "submitted": time.monotonic(),
        }
        return web.json_response(self._public(batch_id))

    async def status(self, request: web.Request) -> web.Response:
        batch_id = request.match_info["id"]
        if batch_id not in self.batches:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        batch = self.batches[batch_id]
        if (
            batch["status"] == "in_progress"
            and time.monotonic() - batch["submitted"] >= self.teacher.config.batch_delay
        ):
            self._complete(batch)
        return web.json_response(self._public(batch_id))

    def _public(self, batch_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.batches[batch_id].items() if k != "submitted"}

    def _complete(self, batch: dict[str, Any]) -> None:
        """Every line answered, or (at `rate_batch_failed`, drawn from the line's key) failed."""
        out, errors = [], []
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]].splitlines() if line.strip()]
        for line in lines:
            key = request_key(line["body"])
            draw = int.from_bytes(hashlib.blake2b(f"batch:{key}".encode(), digest_size=8).digest()) / 2**64
            if draw < self.teacher.config.rate_batch_failed:
                error = {"message": "simulated batch line failure", "type": "server_error"}
                errors.append(
                    {
                        "id": f"resp_{key[:12]}",
                        "custom_id": line["custom_id"],
                        "response": {"status_code": 500, "body": {"error": error}},
                        "error": None,
                    }
                )
                continue
            self.teacher.answered[key] += 1
            out.append(
                {
                    "id": f"resp_{key[:12]}",
                    "custom_id": line["custom_id"],
                    "response": {"status_code": 200, "body": self.teacher.completion(line["body"], key)},
                    "error": None,
                }
            )
        batch["output_file_id"] = self._store("".join(json.dumps(o) + "\n" for o in out).encode())
        batch["error_file_id"] = (
            self._store("".join(json.dumps(e) + "\n" for e in errors).encode()) if errors else None
        )
        counts = {"total": len(lines), "completed": len(out), "failed": len(errors)}
        batch.update(status="completed", completed_at=int(time.time()), request_counts=counts)
