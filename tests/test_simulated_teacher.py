"""The simulated teacher (alia.llm.simulated): a real HTTP server whose answers parse with the
pipeline's own parsers, the same answer for the same request, and faults that the LLMClient survives
without answering any prompt twice."""

import random

import pytest
from conftest import teacher_config
from openai import OpenAI

from alia.llm.client import LLMClient
from alia.llm.prompts import load_prompt
from alia.llm.simulated import SimulatedConfig, SimulatedServer, answer_text

PUMP = "Centrifugal pump"
DOCUMENT = "Bearing wear in a centrifugal pump raises vibration. Oil debris counts rise as the race spalls."
# every prompt of the teacher chain, with template variables as its stage fills them
CHAIN = {
    "sensor_discovery": {"equipment_class": PUMP, "max_sensors": 8},
    "relevance_check": {"equipment_class": PUMP, "failure_mode": "Breakdown", "sensor": "Vibration"},
    "kd_base": {"relation": "asset_sensor", "equipment_class": "Gas turbine", "facts": ["vibration"]},
    "kd_rephrase_toddler": {"document": DOCUMENT},
    "kd_rephrase_scholar": {"document": DOCUMENT},
    "kd_rephrase_wikipedia": {"document": DOCUMENT},
    "kd_rephrase_qa": {"document": DOCUMENT},
    "kd_qa": {"document": DOCUMENT, "min_pairs": 4},
    "key_entities": {"document": DOCUMENT},
    "entity_document": {"entity": "bearing", "equipment_class": PUMP},
    "interaction_document": {"entity": "bearing", "other": "vibration", "equipment_class": PUMP},
}  # fmt: skip


@pytest.fixture(scope="module")
def server():
    with SimulatedServer() as simulated:
        yield simulated


@pytest.mark.parametrize("name", CHAIN)
def test_every_chain_prompt_gets_an_answer_its_parser_accepts(server, name):
    prompt = load_prompt(name)
    client = OpenAI(base_url=server.base_url, api_key="no-key", max_retries=0)
    response = client.chat.completions.create(
        model="m", messages=prompt.messages(**CHAIN[name]), max_tokens=320
    )
    text = response.choices[0].message.content
    parsed = prompt.parser()(text) if prompt.parser() else text
    if name == "sensor_discovery":
        assert 3 <= len(parsed) <= 8
    elif name == "kd_qa":
        assert len(parsed.qa) >= 4
    elif name == "key_entities":
        assert 3 <= len(parsed.entities) <= 10
    elif prompt.output == "text":
        assert 150 <= response.usage.completion_tokens <= 320  # a passage of realistic length
    assert response.usage.completion_tokens > 0 and response.usage.prompt_tokens > 0


def test_the_same_request_gets_the_same_answer_and_others_vary():
    messages = load_prompt("kd_base").messages(**CHAIN["kd_base"])
    first = answer_text(messages, 320, random.Random(1))
    assert first == answer_text(messages, 320, random.Random(1))
    assert first != answer_text(messages, 320, random.Random(2))


def test_malformed_answers_do_not_parse():
    for name in ("sensor_discovery", "relevance_check", "kd_qa", "key_entities"):
        prompt = load_prompt(name)
        text = answer_text(prompt.messages(**CHAIN[name]), 320, random.Random(0), malformed=True)
        with pytest.raises(ValueError):
            prompt.parser()(text)


def test_the_teacher_survives_faults_and_answers_each_prompt_once(tmp_path):
    faults = SimulatedConfig(
        rate_429=0.1, rate_500=0.1, rate_timeout=0.03, rate_drop=0.03, rate_malformed=0.1
    )
    prompt = load_prompt("relevance_check")
    prompts = [
        prompt.messages(equipment_class=f"asset {i}", failure_mode="Breakdown", sensor="Vibration")
        for i in range(80)
    ]
    with SimulatedServer(faults) as faulty:
        config = teacher_config(
            base_url=faulty.base_url, model="m", api_key_env=None, concurrency=32, timeout=1, retries=8,
            max_reasks=4,
        )  # fmt: skip
        with LLMClient(config, tmp_path / "cache.sqlite") as teacher:
            answers = teacher.ask(prompts, parser=prompt.parser())
        stats = faulty.stats()
    metrics = teacher.metrics() | teacher.run_stats()
    assert all(a.ok for a in answers)
    assert metrics["retries"] > 0 and metrics["reasks"] > 0
    assert metrics["requests"] == stats["requests"]  # every request the server saw was counted
    assert stats["answered_twice"] == 0
    assert metrics["calls"] == stats["answered"] == len(prompts) + metrics["reasks"]


def test_a_server_that_died_is_named_in_the_error(tmp_path):
    """A dead server only shows as refused connections; the error says it died and how (CI once saw
    just "Connection error." when llama.cpp died of an instruction its CPU forbids)."""
    from alia.llm.client import LLMError

    prompt = [{"role": "user", "content": "Say yes."}]
    config = teacher_config(base_url="simulated", retries=1, timeout=1)
    with LLMClient(config, tmp_path / "cache.sqlite", server_log=tmp_path / "server.log") as teacher:
        assert teacher.ask([prompt])[0].ok
        teacher.server.process.kill()
        teacher.server.process.wait()
        with pytest.raises(
            LLMError, match=r"the simulated teacher had died \(by SIGKILL\); see .*server\.log"
        ):
            teacher.ask([[{"role": "user", "content": "Say no."}]])
