"""The teacher client against a fake OpenAI-compatible server on 127.0.0.1 (tests/fake_openai.py)."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import teacher_config
from fake_openai import FakeOpenAI

from alia.llm.client import ClientConfig, LLMClient, LLMError
from alia.llm.prompts import KeyEntities, json_parser, parse_numbered_list

HERE = Path(__file__).parent


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def config(server: FakeOpenAI, **overrides) -> ClientConfig:
    defaults = {"retries": 3, "timeout": 5, "concurrency": 4}
    return teacher_config(
        base_url=server.base_url, model="fake-model", api_key_env=None, **defaults | overrides
    )


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_answers_in_order_with_token_counts(server, tmp_path):
    with LLMClient(config(server), tmp_path / "cache.sqlite") as teacher:
        answers = teacher.ask([user("pump"), user("fan blade")])
    assert [a.text for a in answers] == ["answer to: pump", "answer to: fan blade"]
    assert [a.completion_tokens for a in answers] == [3, 4]
    assert teacher.run_stats()["calls"] == 2 and teacher.metrics()["prompt_tokens"] == 3


def test_rows_asked_in_chunks_come_back_in_order_under_one_progress_bar(server, tmp_path, capsys):
    import pandas as pd

    from alia.llm.ask import ask_rows_in_chunks
    from alia.llm.prompts import load_prompt

    items = pd.DataFrame({"document": [f"passage {i}" for i in range(7)], "style": "toddler"})
    with LLMClient(config(server), tmp_path / "cache.sqlite") as teacher:
        chunks = list(ask_rows_in_chunks(teacher, load_prompt("kd_rephrase_toddler"), items, "rephrase", 3))
    assert [len(chunk) for chunk, _ in chunks] == [3, 3, 1]
    answers = pd.concat([chunk for chunk, _ in chunks], ignore_index=True)
    assert answers["document"].tolist() == items["document"].tolist()
    assert all(text.endswith(doc) for text, doc in zip(answers["text"], items["document"], strict=True))
    assert teacher.run_stats()["calls"] == 7
    bars = capsys.readouterr().err
    assert bars.count(" 0/7 ") == 1 and "/3 " not in bars  # one bar for the stage, not one per chunk


def test_retries_then_success(server, tmp_path):
    with LLMClient(config(server), tmp_path / "cache.sqlite") as teacher:
        answers = teacher.ask([user("[500x2] motor"), user("[429x1] valve"), user("pump")])
    assert all(a.ok for a in answers)
    assert server.calls() == {"[500x2] motor": 3, "[429x1] valve": 2, "pump": 1}
    metrics = teacher.metrics() | teacher.run_stats()
    assert (metrics["requests"], metrics["retries"], metrics["calls"]) == (6, 3, 3)


def test_bounded_retries_then_clear_error_with_progress_kept(server, tmp_path):
    prompts = [user("motor"), user("[500xinf] broken"), user("fan")]
    cache = tmp_path / "cache.sqlite"
    with LLMClient(config(server, retries=2), cache) as teacher, pytest.raises(LLMError) as err:
        teacher.ask(prompts)
    message = str(err.value)
    assert message.startswith(
        f"teacher.base_url {server.base_url}: 1 of 3 prompts failed (transient errors retried 2 times) "
        "(first: prompt 1: Inter"
    )
    assert f"the 2 answers that arrived are cached in {cache}" in message
    assert server.calls()["[500xinf] broken"] == 3  # bounded: 1 + 2 retries
    # a re-run resumes: the two finished prompts are not asked again
    with LLMClient(config(server, retries=0), cache) as teacher, pytest.raises(LLMError):
        teacher.ask(prompts)
    assert server.calls()["motor"] == 1 and server.calls()["fan"] == 1
    assert teacher.run_stats()["cache_hits"] == 2


def test_time_outs_are_retried(server, tmp_path):
    with LLMClient(config(server, timeout=0.3, retries=1), tmp_path / "c.sqlite") as teacher:
        with pytest.raises(LLMError, match="APITimeoutError"):
            teacher.ask([user("[sleep=1.0] slow")])
        assert server.calls()["[sleep=1.0] slow"] == 2
        assert teacher.ask([user("[sleep=0.1] a bit slow")])[0].ok  # slow, within the time-out


def test_warm_rerun_makes_zero_calls(server, tmp_path):
    prompts = [user(f"sensor {i}") for i in range(12)]
    with LLMClient(config(server), tmp_path / "cache.sqlite") as teacher:
        first = teacher.ask(prompts)
    with LLMClient(config(server), tmp_path / "cache.sqlite") as teacher:
        second = teacher.ask(prompts)
    assert len(server.requests) == 12
    assert [a.text for a in second] == [a.text for a in first]
    metrics = teacher.metrics() | teacher.run_stats()
    assert (metrics["calls"], metrics["cache_hits"], metrics["new_completion_tokens"]) == (0, 12, 0)
    assert metrics["completion_tokens"] == sum(a.completion_tokens for a in first)


def test_cache_key_covers_sampling_params(server, tmp_path):
    cache = tmp_path / "cache.sqlite"
    for overrides in ({}, {"temperature": 0.1}, {"seed": 7}, {"max_tokens": 64}, {}):
        with LLMClient(config(server, **overrides), cache) as teacher:
            teacher.ask([user("pump")])
    assert server.calls()["pump"] == 4  # the last run repeats the first: a cache hit


def test_concurrency_is_bounded(server, tmp_path):
    with LLMClient(config(server, concurrency=3), tmp_path / "cache.sqlite") as teacher:
        teacher.ask([user(f"[sleep=0.2] q{i}") for i in range(9)])
    assert server.max_in_flight == 3


def test_invalid_answer_is_reasked_then_parsed(tmp_path):
    def answer(messages):  # a list only once told what was wrong
        return "1. vibration\n2. oil debris" if len(messages) > 1 else "Vibration and oil debris."

    with FakeOpenAI(answer) as server, LLMClient(config(server), tmp_path / "c.sqlite") as teacher:
        (result,) = teacher.ask([user("sensors?")], parser=parse_numbered_list)
        assert result.ok and result.parsed == ["vibration", "oil debris"] and result.attempts == 2
        assert teacher.metrics()["reasks"] == 1
        assert "could not be used: expected a numbered list" in server.requests[1]["prompt"]


def test_malformed_json_is_reasked_then_validated(tmp_path):
    good = '{"summary": "Pumps fail.", "entities": ["pump", "seal", "bearing"]}'

    def answer(messages):  # truncated JSON first, as a small model writes it
        return good if len(messages) > 1 else '```json\n{"summary": "Pumps fail.", "entities": ["pump", "se'

    with FakeOpenAI(answer) as server, LLMClient(config(server), tmp_path / "c.sqlite") as teacher:
        (result,) = teacher.ask([user("entities?")], parser=json_parser(KeyEntities))
    assert result.ok and result.parsed.entities == ["pump", "seal", "bearing"] and result.attempts == 2
    assert "could not be used: expected a JSON object" in server.requests[1]["prompt"]


def test_json_schema_is_sent_as_response_format_and_keys_the_cache(tmp_path):
    good = '{"summary": "Pumps fail.", "entities": ["pump", "seal", "bearing"]}'
    with FakeOpenAI(lambda messages: good) as server:
        for mode, expected in (("auto", "json_schema"), ("json_object", "json_object"), ("off", None)):
            with LLMClient(config(server, structured_output=mode), tmp_path / "c.sqlite") as teacher:
                (result,) = teacher.ask(
                    [user("entities?")], parser=json_parser(KeyEntities), schema=KeyEntities
                )
            assert result.ok
            sent = server.requests[-1]["body"].get("response_format")
            assert (sent or {}).get("type") == expected
        assert len(server.requests) == 3  # each format is its own cache entry
    assert sent is None
    fmt = teacher_config(structured_output="auto").response_format(KeyEntities)  # base_url local
    assert fmt["type"] == "json_object" and fmt["schema"]["required"] == ["summary", "entities"]


def test_never_valid_answer_is_a_recorded_failure(tmp_path):
    with (
        FakeOpenAI(lambda messages: "I cannot say.") as server,
        LLMClient(config(server, max_reasks=2), tmp_path / "c.sqlite") as teacher,
    ):
        results = teacher.ask([user("sensors?"), user("more sensors?")], parser=parse_numbered_list)
    assert len(results) == 2  # never silently dropped
    assert [r.ok for r in results] == [False, False]
    assert results[0].text == "I cannot say." and results[0].attempts == 3
    assert results[0].error == "expected a numbered list, one item a line ('1. ...')"
    assert teacher.metrics()["parse_failures"] == 2 and len(server.requests) == 6
    assert (teacher.metrics()["prompts"], teacher.metrics()["parse_rate"]) == (2, 0.0)


def test_the_parse_rate_counts_prompts_not_asks(tmp_path):
    # one prompt parses at once, one after a re-ask, one never: 2 of 3 prompts parsed
    def answer(messages: list[dict]) -> str:
        asked = messages[0]["content"]
        if asked == "first?" or (asked == "second?" and len(messages) > 1):
            return "1. vibration"
        return "I cannot say."

    with (
        FakeOpenAI(answer) as server,
        LLMClient(config(server, max_reasks=1), tmp_path / "c.sqlite") as teacher,
    ):
        teacher.ask([user("first?"), user("second?"), user("third?")], parser=parse_numbered_list)
    metrics = teacher.metrics()
    assert (metrics["prompts"], metrics["reasks"], metrics["parse_failures"]) == (3, 2, 1)
    assert metrics["parse_rate"] == round(2 / 3, 4)


def test_api_key_is_sent_and_never_stored(server, tmp_path, monkeypatch):
    secret = "sk-alia-test-0123456789abcdef"
    monkeypatch.setenv("ALIA_TEST_KEY", secret)
    cfg = config(server).model_copy(update={"api_key_env": "ALIA_TEST_KEY"})
    with LLMClient(cfg, tmp_path / "cache.sqlite") as teacher:
        teacher.ask([user("pump")])
    assert server.requests[0]["auth"] == f"Bearer {secret}"
    assert secret.encode() not in (tmp_path / "cache.sqlite").read_bytes()
    assert secret not in cfg.model_dump_json()


def test_a_setup_error_stops_at_once_and_is_not_counted_as_prompt_failures(tmp_path):
    """The local server cannot start: one clear error, not one failure per prompt."""
    cfg = teacher_config(local={"model": str(tmp_path / "missing.gguf")})
    with (
        LLMClient(cfg, tmp_path / "c.sqlite") as teacher,
        pytest.raises(ValueError, match="must name a GGUF file"),
    ):
        teacher.ask([user("pump"), user("fan")])
    assert teacher.run_stats()["failures"] == 0


def test_server_log_folder_is_created(tmp_path):
    """A fresh clone has no logs/ folder (it is ignored by git)."""
    from alia.llm.llama_server import LocalServer

    log = tmp_path / "logs" / "teacher_server.log"
    with LocalServer(teacher_config().local, "smollm2", log) as server:
        assert server.process.poll() is None
    assert log.exists()


def test_missing_api_key_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ALIA_TEST_KEY", raising=False)
    cfg = teacher_config(base_url="http://127.0.0.1:9/v1", api_key_env="ALIA_TEST_KEY")
    with (
        LLMClient(cfg, tmp_path / "c.sqlite") as teacher,
        pytest.raises(LLMError, match="set the environment"),
    ):
        teacher.ask([user("pump")])


def _cached_prompts(cache: Path) -> set[str]:
    import json

    with sqlite3.connect(cache, timeout=10) as db:
        return {json.loads(m)[-1]["content"] for (m,) in db.execute("SELECT messages FROM responses")}


@pytest.mark.slow
def test_sigkill_mid_run_resumes_without_repeating_finished_prompts(server, tmp_path):
    cache = tmp_path / "cache.sqlite"
    worker = [sys.executable, str(HERE / "teacher_worker.py"), server.base_url, str(cache), "24"]
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    process = subprocess.Popen(worker, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not cache.exists() or len(_cached_prompts(cache)) < 6):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = _cached_prompts(cache)
    assert 6 <= len(finished) < 24, "the worker must be killed mid-run"

    subprocess.run(worker, env=env, check=True, capture_output=True)
    calls = server.calls()
    assert len(_cached_prompts(cache)) == 24 and len(calls) == 24
    assert all(calls[prompt] == 1 for prompt in finished)  # no repeated call for any finished prompt
    assert sum(calls.values()) <= 24 + 2  # at most the calls in flight at the kill (concurrency 2) repeat


@pytest.mark.slow
def test_real_local_server_answers_and_is_stopped(tmp_path):
    """The default teacher: llama.cpp serving the packaged SmolLM2 GGUF on 127.0.0.1."""
    cfg = teacher_config(temperature=0.0, max_tokens=32, concurrency=2)
    questions = [
        user("Name one sensor used to monitor a centrifugal pump."),
        user("What does a thermometer measure?"),
    ]
    with LLMClient(cfg, tmp_path / "cache.sqlite") as teacher:
        answers = teacher.ask(questions)
        server = teacher.server
        assert server.process.poll() is None and server.base_url.startswith("http://127.0.0.1:")
    assert server.process.poll() is not None  # stopped with the block
    assert all(a.ok and a.text.strip() and 0 < a.completion_tokens <= 32 for a in answers)
    assert teacher.run_stats()["calls"] == 2

    with (
        pytest.raises(RuntimeError, match="the stage failed"),
        LLMClient(cfg, tmp_path / "other.sqlite") as teacher,
    ):
        teacher.ask([user("Say yes.")])
        server = teacher.server
        raise RuntimeError("the stage failed")
    assert server.process.poll() is not None  # stopped on error too

    with LLMClient(cfg, tmp_path / "cache.sqlite") as teacher:  # warm: the server is never started
        assert [a.text for a in teacher.ask(questions)] == [a.text for a in answers]
        assert teacher.server is None


def test_chat_caches_tool_calls_and_request_fields(tmp_path):
    def calls_a_tool(messages):
        call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "pump"}'}}
        return {"content": "Looking it up.", "tool_calls": [call]}

    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    with FakeOpenAI(calls_a_tool) as server:
        for _ in range(2):  # the second time from the cache
            with LLMClient(config(server), tmp_path / "cache.sqlite") as teacher:
                answer = teacher.chat(user("find pump"), tools=tools, tool_choice="required", stop=["Obs:"])
        with LLMClient(config(server), tmp_path / "cache.sqlite") as teacher:
            teacher.chat(user("find pump"), tools=tools)  # other request fields: another entry
    assert answer.text == "Looking it up." and answer.ok
    assert answer.tool_calls == [{"id": "c1", "name": "lookup", "arguments": '{"q": "pump"}'}]
    assert len(server.requests) == 2 and teacher.stats["cache_hits"] == 0
    assert server.requests[0]["body"]["tools"] == tools and server.requests[0]["body"]["stop"] == ["Obs:"]
    assert "tool_choice" not in server.requests[1]["body"]


def test_a_cache_written_before_tool_calls_still_answers(server, tmp_path):
    cache = tmp_path / "old.sqlite"
    with LLMClient(config(server), cache) as teacher:
        teacher.ask([user("pump")])
    with sqlite3.connect(cache) as db:  # as the cache table was before it kept tool calls
        db.execute("ALTER TABLE responses DROP COLUMN tool_calls")
    with LLMClient(config(server), cache) as teacher:
        assert [a.text for a in teacher.ask([user("pump")])] == ["answer to: pump"]
        assert teacher.stats["cache_hits"] == 1 and teacher.chat(user("pump")).tool_calls == []
    assert len(server.requests) == 1


def test_an_answer_of_another_endpoint_is_asked_again_unless_the_cache_is_shared(server, tmp_path, capsys):
    """The cache records who answered: another endpoint under the same model name is asked again (one line
    says so), unless teacher.share_cache_across_endpoints says the two are replicas of one model."""
    cache = tmp_path / "cache.sqlite"
    prompts = [user("pump"), user("fan")]
    with LLMClient(config(server), cache) as teacher:
        teacher.ask(prompts)
    with FakeOpenAI(lambda messages: "another model's answer") as other:
        with LLMClient(config(other), cache) as teacher:
            again = teacher.ask(prompts)
        assert len(other.requests) == 2 and teacher.run_stats()["other_endpoint"] == 2
        assert [a.text for a in again] == ["another model's answer"] * 2
        err = capsys.readouterr().err  # said once, however many answers it concerns
        assert (
            err.count("holds answers of") == 1
            and (
                f"{cache}: holds answers of {server.base_url}, not of {other.base_url}: asking again "
                "(teacher.share_cache_across_endpoints: true shares a cache between replicas of a model)\n"
            )
            in err
        )
    with LLMClient(config(server, share_cache_across_endpoints=True), cache) as replica:
        shared = replica.ask(prompts)  # the other endpoint's answers, now the cache's, served
    assert [a.text for a in shared] == ["another model's answer"] * 2
    assert replica.run_stats()["calls"] == 0 and len(server.requests) == 2


def test_a_cache_from_before_endpoints_were_recorded_is_served(server, tmp_path):
    cache = tmp_path / "cache.sqlite"
    with LLMClient(config(server), cache) as teacher:
        teacher.ask([user("pump")])
    with sqlite3.connect(cache) as db:
        db.execute("UPDATE responses SET endpoint = NULL")
    with FakeOpenAI() as other, LLMClient(config(other), cache) as teacher:
        teacher.ask([user("pump")])
        assert teacher.run_stats()["cache_hits"] == 1 and other.requests == []


def test_the_local_endpoint_is_its_model_file_not_its_port():
    local = teacher_config()
    assert local.base_url == "local" and local.endpoint() == f"local:{local.local.model}"
    assert teacher_config(base_url="http://gpu-node:8000/v1/").endpoint() == "http://gpu-node:8000/v1"
