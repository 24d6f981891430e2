"""A fake OpenAI-compatible chat server on 127.0.0.1 for tests: a real HTTP server, not a patched client.

What it does for a request is scripted by markers in the last user message:
    [500x2]    answer HTTP 500 to the first 2 requests of this prompt, then succeed
    [429x1]    the same with HTTP 429 (rate limited)
    [500xinf]  always HTTP 500
    [sleep=0.5] wait 0.5 s before answering (a slow server; past the client's timeout, a time-out)
Otherwise it answers `answer(messages)`, by default "answer to: <last user message>"; an `answer`
that returns a dict returns that message instead (e.g. {"content": None, "tool_calls": [...]}).
Every request is recorded (prompt text and Authorization header), so tests can count calls.

Run as a script (`python tests/fake_openai.py PORT`) it serves until killed; each request is then
appended to the file named by FAKE_OPENAI_LOG.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAILURE = re.compile(r"\[(500|429)x(\d+|inf)\]")
SLEEP = re.compile(r"\[sleep=([\d.]+)\]")


def default_answer(messages: list[dict]) -> str:
    return f"answer to: {messages[-1]['content']}"


class FakeOpenAI:
    def __init__(
        self, answer: Callable[[list[dict]], str | dict] = default_answer, log_path: str | None = None
    ):
        self.answer = answer
        self.log_path = log_path
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with fake.lock:
                    seen = sum(r["prompt"] == prompt for r in fake.requests)
                    record = {"prompt": prompt, "auth": self.headers.get("Authorization", ""), "body": body}
                    fake.requests.append(record)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    if fake.log_path:
                        with open(fake.log_path, "a") as log:
                            log.write(json.dumps({"prompt": prompt}) + "\n")
                try:
                    self._answer(body, prompt, seen)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def _answer(self, body: dict, prompt: str, seen: int) -> None:
                if sleep := SLEEP.search(prompt):
                    time.sleep(float(sleep.group(1)))
                if (fail := FAILURE.search(prompt)) and (fail.group(2) == "inf" or seen < int(fail.group(2))):
                    self._send(
                        int(fail.group(1)), {"error": {"message": "scripted failure", "type": "server_error"}}
                    )
                    return
                reply = fake.answer(body["messages"])
                message = (
                    {"role": "assistant", **reply}
                    if isinstance(reply, dict)
                    else {"role": "assistant", "content": reply}
                )
                text = message.get("content") or ""
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{len(fake.requests)}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                                "message": message,
                            }
                        ],
                        "usage": {
                            "prompt_tokens": len(prompt.split()),
                            "completion_tokens": len(text.split()),
                            "total_tokens": len(prompt.split()) + len(text.split()),
                        },
                    },
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def calls(self) -> Counter:
        """Requests received, by prompt."""
        with self.lock:
            return Counter(r["prompt"] for r in self.requests)

    def __enter__(self) -> FakeOpenAI:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    with FakeOpenAI(log_path=os.environ.get("FAKE_OPENAI_LOG")) as server:
        print(server.base_url, flush=True)
        time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 3600)
