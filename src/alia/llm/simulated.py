"""A simulated teacher: an OpenAI-compatible chat server on 127.0.0.1 that answers every prompt of the
pipeline in the format it asks for, without a model, to rehearse paper-scale runs on a CPU.

Answers are deterministic (a hash of the request picks them) and varied: a numbered list of sensors
for "numbered list" prompts, "Yes"/"No" and a reason for yes/no prompts, the JSON of a summary and
question-answer pairs or key entities for JSON prompts, an option's letter for a multiple-choice
question (its first token's `logprobs` where asked) and the JSON of FailureSensorIQ's leaderboard
prompt, and passages of about 300 tokens (bounded by `max_tokens`) about the entities the prompt names
for everything else. The answers parse with
alia.llm.prompts' parsers; their facts are random, so a simulated corpus measures cost, never quality.

A request that sends `tools` gets OpenAI `tool_calls` back, as vLLM and OpenAI answer: a scripted
policy (`tool_script`) makes the calls listed for the task its first user message contains, one a
turn, then calls `final_answer` naming the items of the observations it was given.

Batch jobs as OpenAI's Batch API runs them (alia.llm.simulated_api): files uploaded to `/v1/files`,
batches submitted to `/v1/batches`, done after `batch_delay` seconds, `rate_batch_failed` of their
lines answered with an error.

Optional, as a vLLM server behaves: a latency model (time to first token, then tokens/s, at most
`max_concurrency` requests decoding at once, the rest queued) and faults at given rates: HTTP 429
and 500, time-outs (the answer never comes), dropped connections (the response stops half-way) and
malformed answers (JSON cut short; a list or yes/no answer in prose). A fault is drawn per attempt
from the request's hash and its attempt number, so a retry can succeed and a rerun fails the same.

    python -m alia.llm.simulated [--port 8000] [--ttft 0.05] [--tokens-per-s 60]
        [--rate-429 0.05] [--rate-500 0.05] [--rate-timeout 0.01] [--rate-drop 0.01]
        [--rate-malformed 0.02]

`teacher.base_url: simulated` starts one for a stage (alia.llm.client), with `teacher.simulated`'s
settings (SimulatedConfig: none by default, the fastest server).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from alia.llm.llama_server import ServerProcess, free_port
from alia.llm.simulated_api import BatchEndpoints, request_key, tool_call_message

SENSORS = [
    "vibration", "temperature", "oil debris", "oil quality", "acoustic emission", "ultrasound",
    "infrared thermography", "motor current", "voltage", "power", "pressure", "flow", "speed",
    "displacement", "torque", "partial discharge", "insulation resistance", "dissolved gas",
    "corrosion probe", "strain", "noise", "leak detection", "exhaust gas temperature", "efficiency",
]  # fmt: skip
FAILURE_MODES = [
    "bearing wear", "imbalance", "misalignment", "overheating", "external leakage", "internal leakage",
    "cavitation", "fouling", "erosion", "corrosion", "fatigue cracking", "rotor bar damage",
    "stator winding fault", "insulation breakdown", "seal failure", "lubrication failure",
    "looseness", "blockage", "breakdown", "low output", "structural deficiency", "noise",
]  # fmt: skip
COMPONENTS = [
    "bearing", "shaft", "impeller", "rotor", "stator", "coupling", "gearbox", "mechanical seal",
    "casing", "valve", "piston", "cylinder", "blade", "nozzle", "winding", "lubrication system",
    "cooling system", "filter", "housing", "foundation", "drive belt", "heat exchanger tube",
]  # fmt: skip
QUALITIES = ["wear", "temperature", "vibration", "lubrication", "clearance", "alignment", "load", "condition"]
# entities a KD_Extend document can name: enough that 44 classes give thousands of distinct pairs
ENTITIES = SENSORS + FAILURE_MODES + [f"{c} {q}" for c in COMPONENTS for q in QUALITIES]
SENTENCES = [
    "{a} is one of the first signs that the {c} of {asset} is degrading.",
    "When {b} develops, {a} measurements change well before a functional failure.",
    "Engineers trend {a} against its baseline to separate normal operation from {b}.",
    "A rise in {a} together with {b} points to a problem in the {c}.",
    "The {c} transmits load to the rest of {asset}, so its condition shows in {a}.",
    "Periodic inspection of the {c} complements continuous monitoring of {a}.",
    "Alarm limits for {a} are set from the manufacturer's data and the asset's history.",
    "Left undetected, {b} shortens the life of the {c} and can stop {asset}.",
    "Maintenance planners use {a} trends to schedule work on the {c} before {b} occurs.",
    "Operating conditions such as load and speed must be recorded when {a} is measured.",
]  # fmt: skip
# questions about an entity, another entity and a component: few repeat across thousands of documents
QUESTIONS = [
    "How is {a} detected on {asset}?",
    "Which measurement shows {b} in the {c} of {asset} first?",
    "Why does {a} change when {b} develops in the {c}?",
    "What does a rise in {a} say about the {c} of {asset}?",
    "When should the {c} be inspected for {b}?",
    "How do {a} and {b} relate on {asset}?",
]
WORDS_PER_TOKEN = 0.75  # a tokenizer's rough ratio for English prose


class SimulatedConfig(BaseModel):
    """The simulated endpoint's behaviour (params.yaml `teacher.simulated`); the defaults are the
    fastest server, with no faults."""

    model_config = ConfigDict(extra="forbid")
    ttft: float = 0.0  # seconds before the first token
    tokens_per_s: float = 0.0  # decoding speed per request; 0: instant
    max_concurrency: int = 0  # requests decoding at once, the rest queued (vLLM's max_num_seqs); 0: any
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_timeout: float = 0.0  # the answer never comes (the client's time-out decides)
    rate_drop: float = 0.0  # the connection closes half-way through the response
    rate_malformed: float = 0.0  # an answer that does not parse
    seed: int = 0
    batch_delay: float = 0.0  # seconds a batch takes to complete (the Batch API's hours, shortened)
    rate_batch_failed: float = 0.0  # share of a batch's lines answered with an error
    tool_script: str = ""  # a JSON file {task text: [{"name", "arguments"}, ...]}: the tool calls to make

    def args(self) -> list[str]:
        return [f"--{name.replace('_', '-')}={value}" for name, value in self.model_dump().items()]


def _tokens(text: str) -> int:
    return max(1, round(len(text.split()) / WORDS_PER_TOKEN))


def _named(text: str) -> list[str]:
    """Entities a prompt names: its 'Asset:' / 'Sensor:' lines, list items and known vocabulary."""
    named = re.findall(r"^(?:Asset|Failure mode|Sensor):\s*(.+)$", text, flags=re.M)
    named += re.findall(r"^\s*-\s+(.+)$", text, flags=re.M)
    lower = text.lower()
    return named + [e for e in ENTITIES if e in lower][:6]


# where the chain's prompts name their asset ("Asset: X", "installed on X to", "monitor X:", "in X:")
ASSET = [
    re.compile(p, re.M)
    for p in (
        r"^Asset:\s*(.+)$",
        r"installed on (.+?) to ",
        r"(?:monitor|modes of|with on) (.+?):",
        r"\bin ([A-Z][^:,\n]{2,40})[:,]",
    )
]


def _asset(text: str) -> str:
    match = next((m for p in ASSET if (m := p.search(text))), None)
    return match.group(1).strip().lower() if match else "the asset"


def _passage(rng: random.Random, text: str, max_tokens: int) -> str:
    """Prose of about 300 tokens (fewer when max_tokens is lower) about what the prompt names."""
    named = _named(text) or rng.sample(ENTITIES, 3)
    asset, words, target = _asset(text), [], min(300, max_tokens) * WORDS_PER_TOKEN * rng.uniform(0.8, 0.95)
    while len(words) < target:
        sentence = rng.choice(SENTENCES).format(
            a=rng.choice(named + SENSORS), b=rng.choice(named + FAILURE_MODES), c=rng.choice(COMPONENTS),
            asset=asset,
        )  # fmt: skip
        words += (sentence[0].upper() + sentence[1:]).split()
    return " ".join(words[: int(max_tokens * WORDS_PER_TOKEN)])


def _question(rng: random.Random, entity: str, asset: str) -> str:
    return rng.choice(QUESTIONS).format(
        a=entity, b=rng.choice(FAILURE_MODES + ENTITIES), c=rng.choice(COMPONENTS), asset=asset
    )


def option_labels(ask: str) -> list[str]:
    """The option labels of a multiple-choice prompt (the students' "A. ..." lines or the leaderboard's
    "A ..." lines after "Options:"), else []."""
    if "Reply with the letter" in ask:
        return re.findall(r"^([A-Z])\. ", ask, re.M)
    if "Options:\n" in ask:
        return re.findall(r"^([A-Z])\)? ", ask.split("Options:\n", 1)[1], re.M)
    return []


def first_token_logprobs(text: str, labels: list[str], rng: random.Random, top: int) -> dict:
    """An OpenAI `logprobs` object for an answer's first token: the labels ranked with the answer's
    first first, the rest of the `top` made-up words."""
    first = text.split()[0] if text.split() else ""
    others = [label for label in labels if label != first] + [w for w in ("The", "I", "Answer") if w != first]
    scores = sorted((rng.uniform(-8, -1) for _ in others), reverse=True)
    ranked = [(first, -0.2)] + list(zip(others, scores, strict=True))
    entries = [{"token": t, "logprob": round(lp, 4), "bytes": None} for t, lp in ranked[:top]]
    return {"content": [{**entries[0], "top_logprobs": entries}]}


def answer_text(messages: list[dict], max_tokens: int, rng: random.Random, malformed: bool = False) -> str:
    """The answer to a conversation, in the format its last user message asks for."""
    ask = messages[-1]["content"] if messages else ""
    if ("could not be used" in ask or "Failed to extract" in ask) and len(messages) >= 3:  # a re-ask
        ask = next(m["content"] for m in messages if m["role"] == "user")  # answers the original prompt
    if labels := option_labels(ask):  # a multiple-choice question: a letter, or the leaderboard's JSON
        picked = rng.choice(labels)
        if "Your output in a single line" not in ask:
            return "I am not sure." if malformed else picked
        reasons = {f"option_{label.lower()}": _passage(rng, ask, 12) for label in labels}
        text = json.dumps(reasons | {"answer": [picked]})
        return text[: len(text) // 2] if malformed else text
    if "numbered list" in ask:
        if malformed:
            return _passage(rng, ask, min(max_tokens, 60))
        at_most = int(m.group(1)) if (m := re.search(r"at most (\d+)", ask)) else 8
        sensors = rng.sample(SENSORS, rng.randint(min(3, at_most), at_most))
        return "\n".join(f"{i}. {s.capitalize()}" for i, s in enumerate(sensors, 1))
    if "Yes or No" in ask:
        reason = _passage(rng, ask, min(max_tokens, 60))
        return "It depends on " + reason if malformed else f"{rng.choice(['Yes', 'No'])}, {reason}"
    if '"faithfulness"' in ask:  # a judgement of a passage
        body = {
            "faithfulness": rng.randint(1, 5),
            "fluency": rng.randint(1, 5),
            "reason": _passage(rng, ask, 20),
        }
        text = json.dumps(body)
        return text[: len(text) // 2] if malformed else text
    if '"summary"' in ask:
        summary = _passage(rng, ask, 30)
        if '"qa"' in ask:
            at_least = int(m.group(1)) if (m := re.search(r"at least (\d+)", ask)) else 3
            body = {"summary": summary, "qa": [
                {"question": _question(rng, e, _asset(ask)), "answer": _passage(rng, e, 40)}
                for e in rng.sample(ENTITIES, rng.randint(at_least, at_least + 2))
            ]}  # fmt: skip
        else:  # the upper half of the prompt's "3 to 10", as a large teacher lists for 300 tokens:
            # KD_Extend's pairs come from entities named together, so this sets its size
            body = {"summary": summary, "entities": rng.sample(ENTITIES, rng.randint(6, 10))}
        text = json.dumps(body)
        return text[: len(text) // 2] if malformed else text
    return _passage(rng, ask, max_tokens)


class SimulatedTeacher:
    """The aiohttp application; `attempts` counts requests per request body, `answered` successes."""

    def __init__(self, config: SimulatedConfig):
        self.config = config
        self.attempts: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.slots = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
        self.batch_api = BatchEndpoints(self)
        self.script = json.loads(Path(config.tool_script).read_text()) if config.tool_script else {}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.add_routes(
            [
                web.get("/v1/models", self.models),
                web.post("/v1/chat/completions", self.chat),
                web.get("/stats", self.stats),
            ]
        )
        self.batch_api.add_routes(app)  # /v1/files and /v1/batches, as OpenAI's Batch API
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "simulated", "object": "model"}]})

    async def stats(self, request: web.Request) -> web.Response:
        """How many distinct requests were answered, and how many more than once."""
        twice = sum(1 for n in self.answered.values() if n > 1)
        return web.json_response(
            {"requests": sum(self.attempts.values()), "answered": len(self.answered), "answered_twice": twice,
             "batches": len(self.batch_api.batches)}
        )  # fmt: skip

    def _draw(self, key: str, attempt: int) -> str | None:
        """The fault of this attempt at this request, if any."""
        c = self.config
        digest = hashlib.blake2b(f"{c.seed}:{key}:{attempt}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest) / 2**64
        for fault, rate in [("429", c.rate_429), ("500", c.rate_500), ("timeout", c.rate_timeout),
                            ("drop", c.rate_drop), ("malformed", c.rate_malformed)]:  # fmt: skip
            if u < rate:
                return fault
            u -= rate
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        key = request_key(body)
        self.attempts[key] += 1
        fault = self._draw(key, self.attempts[key])
        if fault in ("429", "500"):
            message = "rate limited" if fault == "429" else "simulated server error"
            return web.json_response({"error": {"message": message, "type": fault}}, status=int(fault))
        if fault == "timeout":
            await asyncio.sleep(3600)  # the client gives up first
        response = self.completion(body, key, malformed=fault == "malformed")
        if self.config.ttft or self.config.tokens_per_s:
            await self._decode(response["usage"]["completion_tokens"])
        data = json.dumps(response).encode()
        if fault == "drop":  # half the body, then the connection closes
            stream = web.StreamResponse(headers={"Content-Type": "application/json"})
            stream.content_length = len(data)
            await stream.prepare(request)
            await stream.write(data[: len(data) // 2])
            request.transport.close()
            return stream
        self.answered[key] += 1
        return web.Response(body=data, content_type="application/json")

    def completion(self, body: dict, key: str, malformed: bool = False) -> dict:
        """The chat completion for a request body: its answer drawn from the request's key, so that a
        request streamed and the same request in a batch get the same answer."""
        seed = int.from_bytes(hashlib.blake2b(f"{self.config.seed}:{key}".encode(), digest_size=8).digest())
        max_tokens = int(body.get("max_tokens") or 256)
        if body.get("tools"):
            message = tool_call_message(body.get("messages", []), self.script)
            text = message["tool_calls"][0]["function"]["arguments"]
        else:
            text = answer_text(body.get("messages", []), max_tokens, random.Random(seed), malformed)
            message = {"role": "assistant", "content": text}
        completion_tokens = _tokens(text)
        prompt_tokens = sum(_tokens(str(m.get("content") or "")) for m in body.get("messages", []))
        logprobs = None
        if body.get("logprobs"):
            labels = option_labels(next((m["content"] for m in body["messages"] if m["role"] == "user"), ""))
            top = int(body.get("top_logprobs") or 1)
            logprobs = first_token_logprobs(text, labels, random.Random(seed + 1), top)
        finish_reason = (
            "tool_calls" if body.get("tools") else "length" if completion_tokens >= max_tokens else "stop"
        )
        return {
            "id": f"chatcmpl-{key[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "simulated"),
            "choices": [{"index": 0, "message": message, "logprobs": logprobs,
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }  # fmt: skip

    async def _decode(self, tokens: int) -> None:
        seconds = self.config.ttft + (tokens / self.config.tokens_per_s if self.config.tokens_per_s else 0)
        if self.slots is None:
            await asyncio.sleep(seconds)
            return
        async with self.slots:
            await asyncio.sleep(seconds)


class SimulatedServer(ServerProcess):
    """The simulated teacher in its own process on 127.0.0.1, for one `with` block."""

    name = "simulated teacher"

    def __init__(self, config: SimulatedConfig | None = None, log_path: str | Path | None = None):
        self.config = config or SimulatedConfig()
        self.log_path = Path(log_path) if log_path else None

    def __enter__(self) -> SimulatedServer:
        port = free_port()
        command = [sys.executable, "-m", "alia.llm.simulated", f"--port={port}", *self.config.args()]
        self._start(command, port, timeout=30, poll=0.05)
        return self

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/stats", timeout=10) as response:
            return json.load(response)

    def __exit__(self, *exc: object) -> None:
        self._stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8000)
    for name, field in SimulatedConfig.model_fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(field.default), default=field.default)
    args = vars(parser.parse_args())
    port = args.pop("port")
    web.run_app(SimulatedTeacher(SimulatedConfig(**args)).app(), host="127.0.0.1", port=port, print=None,
                access_log=None)  # fmt: skip


if __name__ == "__main__":
    main()
