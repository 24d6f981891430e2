"""The agent's evaluation: the question set from the tables, the AssetOpsBench scenario files, the
matcher and the scores on hand-made cases, the paired comparison, and the native tool-calling path
driven by the simulated endpoint's scripted policy (as vLLM or OpenAI would drive the agent)."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, teacher_config

from alia.agent import evaluation
from alia.agent.react import build_agent
from alia.agent.scenarios import KINDS, SCHEMA, build_scenarios, read_scenarios, write_scenarios
from alia.agent.scoring import ItemMatcher, item_scores, paired_f1
from alia.agent.tools import BM25Tools
from alia.core.io import TableError
from alia.data.vocabulary import Canonicaliser
from alia.llm.client import LLMClient


@pytest.fixture(scope="module")
def scenarios(tasks):
    return build_scenarios(tasks, "test", max_per_kind=40, seed=0)


def test_the_question_set_is_about_unseen_assets_with_gold_from_the_tasks(tasks, scenarios):
    test_assets = set(tasks.loc[(tasks["split"] == "test") & (tasks["asset"] != ""), "asset"])
    assert len(scenarios) >= 150 and set(scenarios["kind"]) == set(KINDS)
    assert set(scenarios["asset_name"]) <= test_assets and scenarios["id"].is_unique
    assert all(len(gold) > 0 for gold in scenarios["answer"])
    relevant = {
        (t, *e): set(r) for t, e, r in zip(tasks["task"], tasks["entities"], tasks["relevant"], strict=True)
    }
    for s in scenarios.itertuples():
        a = s.arguments
        if s.kind == "sensors_fm":
            expected = (
                relevant[("S2FM", a["asset"], a["sensor"])] & relevant[("S2FM", a["asset"], a["sensor_2"])]
            )
        elif s.kind == "symptom":
            modes = relevant[("S2FM", a["asset"], a["sensor"])]
            expected = set().union(*(relevant.get(("FM2CMP", a["asset"], fm), set()) for fm in modes))
        elif s.kind == "confirm":
            expected = relevant[("FM2S", a["asset"], a["failure_mode"])]
            expected |= relevant.get(("FM2CMP", a["asset"], a["failure_mode"]), set())
        else:
            task = {"fm2s": "FM2S", "s2fm": "S2FM", "a2s": "A2S", "fm2cmp": "FM2CMP"}[s.kind]
            expected = relevant[(task, *a.values())]
        assert set(s.answer) == expected, s.id
        assert all(value in s.text for value in a.values()), s.id
        assert ", ".join(s.answer) in s.characteristic_form
    assert build_scenarios(tasks, "test", 40, 0).equals(scenarios)  # seeded


def test_a_scenario_file_round_trips_and_one_from_elsewhere_loads(scenarios, tmp_path):
    write_scenarios(scenarios, tmp_path / "ours.jsonl")
    first = json.loads((tmp_path / "ours.jsonl").read_text().splitlines()[0])
    assert list(first)[:5] == SCHEMA
    assert read_scenarios(tmp_path / "ours.jsonl").equals(scenarios)
    # AssetOpsBench's own fields only; the answer as text
    theirs = [
        {"id": 501, "text": "List all failure modes of Chiller 6 that can be detected by vibration.",
         "asset_name": "Chiller 6", "characteristic_form": "a list",
         "answer": "Bearing damage, imbalance; misalignment"},
        {"id": 502, "text": "What is the forecast for Chiller 9?", "answer": ["none"]},
    ]  # fmt: skip
    (tmp_path / "theirs.json").write_text(json.dumps(theirs))
    loaded = read_scenarios(tmp_path / "theirs.json")
    assert loaded["answer"].tolist() == [["Bearing damage", "imbalance", "misalignment"], ["none"]]
    assert loaded["kind"].tolist() == ["scenario", "scenario"] and loaded["id"].tolist() == ["501", "502"]
    assert evaluation.run_oracle(None, loaded).empty  # no gold arguments: the oracle answers none of them
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "text": "a"}\n{"id": 2}\n')
    with pytest.raises(TableError, match=r"bad.jsonl, row scenario 2: no text"):
        read_scenarios(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"id": 1, "text": "a"}\n{"id": 2, \n')
    with pytest.raises(TableError, match=r"broken.jsonl, row 2: not JSON"):
        read_scenarios(tmp_path / "broken.jsonl")


@pytest.fixture(scope="module")
def matcher():
    items = ["bearing", "bearing damage", "temperature", "vibration", "oil leakage",
             "oil leakage / oil consumption", "pressure / pressure ratio",
             "compressor pressure / pressure ratio", "power turbine damage"]  # fmt: skip
    # raw spellings of the tables: one the rules turn into the item's name, one they do not
    aliases = pd.DataFrame(
        {"name": ["power turbine damage", "temperature"], "alias": ["Power turbine damaged", "Temp."]}
    )
    return ItemMatcher(items, aliases, Canonicaliser.from_yaml(REPO / "data" / "vocabulary_rules.yaml"))


def test_the_matcher_reads_spelling_variants_and_compound_labels(matcher):
    # case, a misspelling the rules fix, plurals, a raw alias of the tables
    assert matcher.named("Temparature sensors, VIBRATIONS") == ["temperature", "vibration"]
    assert matcher.named("the power turbine damaged") == ["power turbine damage"]
    assert matcher.named("check the temp.") == []  # not the name's spelling by the rules: not an alias
    # the longest name wins ("bearing damage", not also "bearing"); a mention twice counts once
    assert matcher.named("Bearing damage, bearing damage and the bearings") == ["bearing", "bearing damage"]
    # a part that is itself an item names that item only; another part names every compound it is in
    assert matcher.named("oil leakage") == ["oil leakage"]
    assert matcher.named("oil consumption") == ["oil leakage / oil consumption"]
    assert matcher.named("pressure ratio") == [
        "compressor pressure / pressure ratio",
        "pressure / pressure ratio",
    ]
    assert matcher.named("compressor pressure / pressure ratio") == ["compressor pressure / pressure ratio"]
    assert matcher.named("") == [] and matcher.named("no idea") == []
    assert matcher.canonical(["Vibrations", "an unknown thing"]) == ["an unknown thing", "vibration"]


def test_scores_by_hand():
    assert item_scores(["a", "b", "c"], ["a", "d"]) == {
        "precision": pytest.approx(1 / 3), "recall": 0.5, "f1": pytest.approx(0.4), "exact": 0.0,
    }  # fmt: skip
    assert item_scores(["b", "a"], ["a", "b"]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "exact": 1.0}
    assert item_scores([], ["a"]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "exact": 0.0}


def test_score_counts_an_empty_answer_and_reads_text_answers(matcher):
    scenarios = pd.DataFrame({"id": ["q1", "q2"], "kind": ["fm2s", "fm2s"], "cluster": ["c1", "c2"],
                              "answer": [["temperature", "vibration"], ["bearing"]]})  # fmt: skip
    answers = pd.DataFrame({"id": ["q1", "q2"], "answer": ["Temparature and oil leakage", ""], "steps": 1})
    scored = evaluation.score("closed_book", answers, scenarios, matcher)
    assert scored["items"].tolist() == [["oil leakage", "temperature"], []]
    assert scored["f1"].tolist() == [0.5, 0.0] and scored["no_answer"].tolist() == [False, True]
    metrics = evaluation.system_metrics(scored)
    assert metrics["overall"]["questions"] == 2 and metrics["overall"]["f1"] == 0.25
    assert metrics["counts"]["no_answer"] == 1 and metrics["kinds"]["fm2s"]["recall"] == 0.25


def test_paired_f1_on_the_same_questions():
    base = pd.DataFrame(
        {"id": list("abcdef"), "cluster": list("aabbcc"), "f1": [0.0, 0.5, 0.2, 0.1, 0.0, 0.3]}
    )
    same = paired_f1(base, base)
    assert same["delta_f1"] == 0 and same["p_wilcoxon"] == 1.0 and same["questions"] == 6
    better = base.assign(f1=base["f1"] + 0.5)
    result = paired_f1(better, base.iloc[:4])  # only the questions both answered
    assert result["questions"] == 4 and result["delta_f1"] == 0.5 and result["better"] == 4
    assert result["ci95"] == [0.5, 0.5]


def test_the_native_tool_calling_path_against_the_simulated_endpoint(tasks, scenarios, tmp_path):
    """A scripted policy that makes the oracle's calls through OpenAI `tool_calls`: the agent driven as
    vLLM or OpenAI drive it answers with the oracle's items, and scores what the oracle scores."""
    tasks.to_parquet(tmp_path / "tasks.parquet")
    tools = BM25Tools(tmp_path / "tasks.parquet", k=5)
    chosen = scenarios[scenarios["kind"].isin(["fm2s", "s2fm", "confirm"])].groupby("kind").head(1)
    tool_of = {"fm2s": ["sensors_for_failure_mode"], "s2fm": ["failure_modes_for_sensor"],
               "confirm": ["sensors_for_failure_mode", "components_for_failure_mode"]}  # fmt: skip
    script = {
        s.text: [{"name": name, "arguments": s.arguments} for name in tool_of[s.kind]]
        for s in chosen.itertuples()
    }
    (tmp_path / "script.json").write_text(json.dumps(script))
    config = teacher_config(
        base_url="simulated", model="simulated", simulated={"tool_script": str(tmp_path / "script.json")}
    )
    with LLMClient(config, tmp_path / "cache.sqlite") as llm:
        agent = build_agent(tools, llm, max_steps=4, tool_calling="auto")  # auto: native for an endpoint
        answers, trace = evaluation.run_react(agent, chosen, progress=False)
    requests = [r for r in trace if r["type"] == "action"]
    assert [c["name"] for r in requests for c in r["tool_calls"]] == [
        "sensors_for_failure_mode", "final_answer",  # fm2s
        "failure_modes_for_sensor", "final_answer",  # s2fm
        "sensors_for_failure_mode", "components_for_failure_mode", "final_answer",  # confirm
    ]  # fmt: skip
    assert (answers["state"] == "success").all() and answers["tool_calls"].tolist() == [1, 1, 2]
    oracle = evaluation.run_oracle(tools, chosen)
    for ours, theirs in zip(answers["answer"], oracle["items"], strict=True):
        assert ours == ", ".join(dict.fromkeys(theirs))
    matcher = ItemMatcher({c for cs in tasks["candidates"] for c in cs})
    react = evaluation.score("react", answers, chosen, matcher)
    ceiling = evaluation.score("oracle", oracle, chosen, matcher)
    assert np.allclose(react["f1"], ceiling["f1"]) and react["f1"].gt(0).any()
