"""The LLM client: the only way alia calls an LLM, in either of its roles (the stages' teacher,
alia.llm.teacher; the agent's LLM, alia.agent.react).

One `LLMClient` talks to any OpenAI-compatible endpoint (vLLM, a llama.cpp server, OpenAI) through the
`openai` client, with
  - a persistent response cache (alia.llm.cache: sqlite, one row per answered prompt, committed as it
    arrives, keyed by model, messages and sampling, and served only as the endpoint's that gave it):
    a re-run, a `dvc repro -f` or a restart after a crash makes no call for a prompt already answered;
  - bounded concurrency (an asyncio semaphore) and retries with exponential backoff on 429, 5xx,
    time-outs and dropped connections (tenacity);
  - structured answers parsed and validated, an invalid one re-asked a bounded number of times;
  - token accounting and a progress bar with rate and ETA.
`base_url: local` serves a packaged GGUF model with llama.cpp's server on 127.0.0.1
(alia.llm.llama_server), `base_url: simulated` a simulated teacher (alia.llm.simulated, for rehearsing
paper-scale runs); either starts on the first cache miss and stops on exit. Every default is in
params.yaml `teacher:` (the simulated server's in alia.llm.simulated.SimulatedConfig).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import openai
from pydantic import BaseModel, ConfigDict, Field
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from tqdm.auto import tqdm

from alia.llm.batch import BatchConfig, run_batches
from alia.llm.cache import Message, ResponseCache, answer_record, cache_key
from alia.llm.llama_server import LocalServer, LocalServerConfig
from alia.llm.prompts import Parser
from alia.llm.simulated import SimulatedConfig, SimulatedServer

LOCAL = "local"
SIMULATED = "simulated"
# What a stage's metrics file reports of its teacher use: the same for a cold run and a warm one, which
# replays every answer from the cache. `parse_rate`, the share of prompts whose answer parsed, is what
# most often differs between two machines that run one local teacher (docs/teacher.md).
COUNTERS = ("prompts", "reasks", "parse_failures", "prompt_tokens", "completion_tokens")
# What this run alone did (a warm re-run makes no call): MLflow and the log get these, the metrics file
# does not, so that `dvc metrics diff` shows only changes of the data. new_* count tokens spent by this
# run (not cached); other_endpoint, the cached answers of another endpoint, asked again.
# batch_*: requests submitted in batches, answers read back, lines failed, the discount in micro-USD.
RUN_STATS = ("requests", "calls", "cache_hits", "retries", "failures", "new_prompt_tokens",
             "new_completion_tokens", "batch_requests", "batch_answers", "batch_failed",
             "batch_saved_microusd")  # fmt: skip


class ClientConfig(BaseModel):
    """params.yaml `teacher:`, where every default is. Holds the *name* of the API-key variable, never
    the key."""

    model_config = ConfigDict(extra="forbid")
    base_url: str  # "local", "simulated", or an OpenAI-compatible URL such as http://gpu-node:8000/v1
    model: str
    api_key_env: str | None
    temperature: Annotated[float, Field(ge=0)]
    max_tokens: Annotated[int, Field(ge=1)]
    seed: int
    concurrency: Annotated[int, Field(ge=1)]  # requests in flight
    timeout: Annotated[float, Field(gt=0)]
    retries: Annotated[int, Field(ge=0)]  # further attempts after the first, on 429 / 5xx / time-outs
    max_reasks: Annotated[int, Field(ge=0)]  # further attempts after an answer that does not parse
    # How a JSON answer's schema is sent: OpenAI's and vLLM's "json_schema" response format, or
    # llama.cpp's "json_object" + schema; "auto" picks llama.cpp's for the local server.
    structured_output: Literal["auto", "json_schema", "json_object", "off"]
    share_cache_across_endpoints: bool  # serve cached answers of another endpoint (alia.llm.cache)
    local: LocalServerConfig
    # the simulated endpoint's latency and faults (base_url: simulated); the default is the fastest
    simulated: SimulatedConfig = SimulatedConfig()
    batch: BatchConfig = BatchConfig()  # the prompts a stage needs answered by batch jobs first

    def endpoint(self) -> str:
        """Who answers, as the cache records it: the local server by its model file (its port changes
        every run), "simulated", or the endpoint's URL."""
        return f"{LOCAL}:{self.local.model}" if self.base_url == LOCAL else self.base_url.rstrip("/")

    def sampling(self) -> dict[str, Any]:
        """What, besides model and messages, decides an answer: part of the cache key."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed}

    def response_format(
        self, schema: type[BaseModel] | dict[str, Any] | None, name: str = "answer"
    ) -> dict[str, Any] | None:
        """The request's response_format that constrains the answer to `schema`'s JSON (a pydantic
        model, or a JSON schema named `name`)."""
        mode = self.structured_output
        if schema is None or mode == "off":
            return None
        if mode == "auto":
            mode = "json_object" if self.base_url == LOCAL else "json_schema"
        if not isinstance(schema, dict):
            schema, name = schema.model_json_schema(), schema.__name__
        if mode == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


class LLMError(RuntimeError):
    """Calls that still failed after the bounded retries; the answers that did arrive are cached."""


@dataclass
class Answer:
    """One prompt's outcome. `parsed` is None and `error` set when the answer never parsed."""

    text: str
    parsed: Any = None
    error: str | None = None
    cache_key: str = ""
    attempts: int = 1  # asks, re-asks included
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {id, name, arguments (JSON text)}
    # the first token's most probable tokens and their log-probabilities, where `logprobs` was asked
    top_logprobs: list[tuple[str, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, openai.APIStatusError):
        return error.status_code == 429 or error.status_code >= 500
    return isinstance(error, openai.APITimeoutError | openai.APIConnectionError)


@dataclass
class LLMClient:
    """Use as a context manager: `with LLMClient(config, cache_path) as teacher: teacher.ask(...)`."""

    config: ClientConfig
    cache_path: str | Path
    server_log: str | Path | None = None
    stats: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        config = self.config
        self.cache = ResponseCache(self.cache_path, config.endpoint(), config.share_cache_across_endpoints)
        self._server: LocalServer | SimulatedServer | None = None
        self._client: openai.AsyncOpenAI | None = None

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def server(self) -> LocalServer | SimulatedServer | None:
        """The local or simulated server, once a cache miss has started it."""
        return self._server

    def _server_death(self) -> str:
        death = self._server.death() if self._server is not None else ""
        return f"; {death}" if death else ""

    def close(self) -> None:
        if self._server is not None:
            self._server.__exit__(None, None, None)
            self._server = None
        self.cache.close()

    def _api_key(self) -> str:
        name = self.config.api_key_env
        if name and os.environ.get(name):
            return os.environ[name]
        if self.config.base_url in (LOCAL, SIMULATED) or not name:
            return "no-key"  # the local and simulated servers and keyless vLLM endpoints ignore it
        raise LLMError(
            f"set the environment variable {name} to the API key of {self.config.base_url}"
            " (params.yaml teacher.api_key_env names it)"
        )

    def _ensure_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            base_url = self.config.base_url
            if base_url in (LOCAL, SIMULATED):
                if self._server is None:
                    self._server = (
                        LocalServer(self.config.local, self.config.model, self.server_log)
                        if base_url == LOCAL
                        else SimulatedServer(self.config.simulated, self.server_log)
                    ).__enter__()
                base_url = self._server.base_url
            # tenacity does the retrying, so the client's own is off: one place decides.
            self._client = openai.AsyncOpenAI(
                base_url=base_url, api_key=self._api_key(), timeout=self.config.timeout, max_retries=0
            )
        return self._client

    def _request_key(self, messages: list[Message], request: dict[str, Any] | None) -> tuple[str, dict]:
        sampling = self.config.sampling() | {k: v for k, v in (request or {}).items() if v is not None}
        return cache_key(self.config.model, messages, sampling), sampling

    async def _call(self, messages: list[Message], request: dict[str, Any] | None = None) -> dict[str, Any]:
        """One answer for `messages`, from the cache or the endpoint (with retries). `request`: further
        fields of the request (response_format, tools, tool_choice, stop), part of the cache key."""
        key, sampling = self._request_key(messages, request)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats["cache_hits"] += 1
            return {**cached, "key": key}
        client = self._ensure_client()
        self.stats["requests"] += 1
        try:
            response = await client.chat.completions.create(
                model=self.config.model, messages=messages, **sampling
            )
            failed = None
        except openai.OpenAIError as error:
            if not _is_transient(error):
                raise
            failed = error
        if failed is not None:
            # Retries are tenacity's, entered only after a failure: its machinery costs ~50 us a
            # request, a tenth of what a fast endpoint leaves the client. The failure is re-raised
            # as tenacity's first attempt, so its backoff and stop count it.
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.config.retries + 1),
                wait=wait_exponential_jitter(multiplier=0.5, max=30),
                retry=retry_if_exception(_is_transient),
                reraise=True,
            ):
                with attempt:
                    if attempt.retry_state.attempt_number == 1:
                        raise failed
                    self.stats["retries"] += 1
                    self.stats["requests"] += 1
                    response = await client.chat.completions.create(
                        model=self.config.model, messages=messages, **sampling
                    )
        answer = answer_record(response)
        self.cache.put(key, self.config.model, messages, sampling, answer)  # written as it arrives
        self.stats["calls"] += 1
        self.stats["new_prompt_tokens"] += answer["prompt_tokens"]
        self.stats["new_completion_tokens"] += answer["completion_tokens"]
        return {**answer, "key": key}

    def _answer(self, raw: dict[str, Any], attempts: int = 1) -> Answer:
        """An Answer from `_call`'s record, its tokens counted (cached ones too: what the run used)."""
        self.stats["prompt_tokens"] += raw["prompt_tokens"]
        self.stats["completion_tokens"] += raw["completion_tokens"]
        return Answer(
            raw["text"],
            cache_key=raw["key"],
            attempts=attempts,
            prompt_tokens=raw["prompt_tokens"],
            completion_tokens=raw["completion_tokens"],
            finish_reason=raw["finish_reason"],
            tool_calls=raw["tool_calls"],
            top_logprobs=[(t, lp) for t, lp in raw.get("top_logprobs", [])],
        )

    async def _close_client(self) -> None:
        """The async client belongs to the event loop of one `ask` or `chat`: closed at its end."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _ask_one(self, messages: list[Message], parser: Parser | None, request: dict) -> Answer:
        attempts = 0
        self.stats["prompts"] += 1
        while True:
            attempts += 1
            answer = self._answer(await self._call(messages, request), attempts)
            if parser is None:
                answer.parsed = answer.text
                return answer
            try:
                answer.parsed = parser(answer.text)
                return answer
            except ValueError as err:
                answer.error = str(err)
            if attempts > self.config.max_reasks:
                self.stats["parse_failures"] += 1
                return answer
            # Re-ask with the problem spelled out: a new conversation, so a new cache entry.
            self.stats["reasks"] += 1
            problem = f"That answer could not be used: {answer.error}. "
            problem += "Answer again, exactly in the requested format."  # the same text, the same cache key
            reply = [{"role": "assistant", "content": answer.text}, {"role": "user", "content": problem}]
            messages = [*messages, *reply]

    async def _ask_all(
        self,
        prompts: Sequence[list[Message]],
        parser: Parser | None,
        progress: tqdm,
        request: dict,
    ) -> list:
        # `concurrency` workers share one queue: as many tasks as requests in flight, not one a prompt
        results: list[Answer | BaseException | None] = [None] * len(prompts)
        queue = iter(range(len(prompts)))

        async def worker() -> None:
            for i in queue:
                try:
                    results[i] = await self._ask_one(prompts[i], parser, request)
                except openai.OpenAIError as error:  # kept: every other prompt still finishes and is cached
                    results[i] = error
                progress.update()

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.config.concurrency, len(prompts)))))
            return results
        finally:
            await self._close_client()

    def ask(
        self,
        prompts: Sequence[list[Message]],
        parser: Parser | None = None,
        desc: str = "teacher",
        schema: type[BaseModel] | None = None,
        progress: tqdm | None = None,
        request: dict[str, Any] | None = None,
    ) -> list[Answer]:
        """Answers for every prompt, in order; with `schema`, the endpoint is asked to constrain each
        answer to that JSON schema; `request`: further request fields (max_tokens, logprobs, ...), part of
        the cache key. Raises LLMError if a call still failed after its retries; the answers that did
        arrive are cached, so a re-run resumes from them. `progress`: a bar to advance, else its own."""
        own = progress is None
        if own:
            progress = tqdm(total=len(prompts), desc=desc, unit="prompt", dynamic_ncols=True)
        try:
            request = (request or {}) | {"response_format": self.config.response_format(schema)}
            if self.config.batch.enabled:  # answered by batch jobs into the cache, then read from it
                run_batches(self, prompts, request)
            results = asyncio.run(self._ask_all(prompts, parser, progress, request))
        finally:
            if own:
                progress.close()
        errors = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
        if errors:
            self.stats["failures"] += len(errors)
            i, first = errors[0]
            raise LLMError(
                f"teacher.base_url {self.config.base_url}: {len(errors)} of {len(prompts)} prompts failed "
                f"(transient errors retried {self.config.retries} times) "
                f"(first: prompt {i}: {type(first).__name__}: {first}); "
                f"the {len(prompts) - len(errors)} answers that arrived are cached in {self.cache.path}, "
                f"so a re-run resumes from them{self._server_death()}"
            ) from first
        return results

    def chat(self, messages: list[Message], **request: Any) -> Answer:
        """One answer to one conversation, for callers that go turn by turn (the agent), through the same
        cache, retries and accounting as `ask`. `request` holds further request fields (tools,
        tool_choice, stop, response_format); they are part of the cache key."""
        self.stats["prompts"] += 1

        async def one() -> dict[str, Any]:
            try:
                return await self._call(messages, request)
            finally:
                await self._close_client()

        try:
            raw = asyncio.run(one())
        except openai.OpenAIError as error:
            self.stats["failures"] += 1
            raise LLMError(
                f"teacher.base_url {self.config.base_url}: the call failed after {self.config.retries} "
                f"retries: {type(error).__name__}: {error}{self._server_death()}"
            ) from error
        answer = self._answer(raw)
        answer.parsed = answer.text
        return answer

    def answer_in_batches(
        self,
        prompts: Sequence[list[Message]],
        schema: type[BaseModel] | None = None,
        request: dict | None = None,
    ) -> None:
        """The prompts `ask` would send, answered by batch jobs into the cache (alia.llm.batch)."""
        run_batches(self, prompts, (request or {}) | {"response_format": self.config.response_format(schema)})

    def metrics(self) -> dict[str, int | float | None]:
        """Counts for a stage's metrics file, and the share of prompts whose answer parsed."""
        counts: dict[str, int | float | None] = {k: int(self.stats.get(k, 0)) for k in COUNTERS}
        prompts = self.stats.get("prompts", 0)
        counts["parse_rate"] = (
            round(1 - self.stats.get("parse_failures", 0) / prompts, 4) if prompts else None
        )
        return counts

    def run_stats(self) -> dict[str, int]:
        """Counts of this run's calls, for MLflow and the log."""
        counts = {k: int(self.stats.get(k, 0)) for k in RUN_STATS}
        return counts | {"other_endpoint": self.cache.other_endpoint}
