"""Phase I (sensor discovery, relevance check) against the fake teacher server."""

import re

import pandas as pd
import pytest
from conftest import REPO, teacher_config
from fake_openai import FakeOpenAI

from alia.data.kg import add_discovered_sensors, add_relevance, from_tables
from alia.kd.phase1 import check_relevance, discover_sensors, relevance_requests
from alia.llm.ask import PROVENANCE_COLUMNS
from alia.llm.client import LLMClient
from alia.llm.prompts import load_prompt

SENSORS_BY_CLASS = {
    "Pumps": "1. Vibration sensor\n2. **Bearing temperature**\n3. Oil debris/ contamination\n4. Flow meter",
    "Valves": "Acoustic emission and position sensors.",  # never a list: a recorded failure
}


def discovery_answer(messages):
    asset = re.search(r"installed on (.+?) to monitor", messages[1]["content"]).group(1)
    return SENSORS_BY_CLASS[asset]


def relevance_answer(messages):
    text = messages[-1]["content"]
    if "Sensor: vibration" in text:
        return "Yes\nVibration grows as the impeller wears."
    if "Sensor: oil debris" in text:
        return "No\nThe pumped fluid carries no wear debris."
    return "It depends on the installation."  # no yes/no: re-asked, then a recorded failure


def teacher(server, tmp_path) -> LLMClient:
    config = teacher_config(base_url=server.base_url, model="fake-model", api_key_env=None, max_reasks=1)
    return LLMClient(config, tmp_path / "cache.sqlite")


@pytest.fixture
def discovered(tables, rules, tmp_path):
    vocab = tables["vocabulary"]
    known = set(vocab.loc[vocab["kind"] == "sensor", "name"])
    with FakeOpenAI(discovery_answer) as server, teacher(server, tmp_path) as t:
        return discover_sensors(
            t,
            load_prompt("sensor_discovery", REPO / "prompts"),
            ["Pumps", "Valves"],
            rules,
            known,
            max_sensors=8,
        )


def test_sensor_discovery_canonicalises_and_keeps_failures(discovered):
    answers, sensors = discovered
    assert list(answers.columns) == ["equipment_class", "max_sensors", *PROVENANCE_COLUMNS]
    assert answers["ok"].tolist() == [True, False]
    assert (
        answers.loc[1, "text"] == "Acoustic emission and position sensors."
        and answers.loc[1, "attempts"] == 2
    )
    assert answers.loc[1, "error"] == "expected a numbered list, one item a line ('1. ...')"
    pumps = sensors[sensors["equipment_class"] == "Pumps"]
    assert pumps["sensor"].tolist() == [
        "vibration",
        "bearing temperature",
        "oil debris",
        "oil contamination",
        "flow",
    ]
    assert pumps["rank"].tolist() == [1, 2, 3, 4, 5]
    assert pumps["in_vocabulary"].tolist() == [True, False, True, True, False]
    assert set(pumps["sensor_raw"]) >= {"Vibration sensor", "Oil debris/ contamination"}


def test_new_sensors_become_vocabulary_entries(discovered, tables):
    from alia.kd.phase1 import extend_vocabulary

    vocab = tables["vocabulary"]
    grown = extend_vocabulary(vocab, discovered[1], load_prompt("sensor_discovery", REPO / "prompts"))
    added = grown.iloc[len(vocab) :]
    assert list(grown.columns) == list(vocab.columns)
    assert added[["name", "alias", "source_files"]].values.tolist() == [
        ["bearing temperature", "Bearing temperature", "llm:sensor_discovery"],
        ["flow", "Flow meter", "llm:sensor_discovery"],
    ]


def test_discovered_sensors_grow_the_kg(discovered, tables):
    kg = from_tables(tables)
    before = kg.counts()
    added = add_discovered_sensors(kg, discovered[1], load_prompt("sensor_discovery", REPO / "prompts"))
    after = kg.counts()
    assert added == 5 and after["edges"]["monitored_by"] == before["edges"]["monitored_by"] + 5
    assert after["nodes"]["sensor"] == before["nodes"]["sensor"] + 2  # bearing temperature, flow
    assert kg.neighbours("equipment_class:Pumps", "monitored_by")[0] == "sensor:bearing temperature"
    assert kg.graph.nodes["sensor:flow"]["source"] == "llm"
    assert kg.graph.nodes["sensor:vibration"]["source"] == "table"  # an existing node keeps its provenance


def test_relevance_items_grid(tables, discovered):
    items = relevance_requests(
        tables["class_failure_modes"], discovered[1], failure_modes_per_class=2, sensors_per_class=3
    )
    pumps_fms = tables["class_failure_modes"].query("equipment_class == 'Pumps'")["failure_mode"].tolist()[:2]
    assert len(items) == 2 * 3  # Valves has no sensors: no items
    assert items["failure_mode"].unique().tolist() == pumps_fms
    assert items["sensor"].unique().tolist() == ["vibration", "bearing temperature", "oil debris"]


def test_relevance_labels_and_kg_edges(tables, discovered, tmp_path):
    items = pd.DataFrame(
        {
            "equipment_class": ["Pumps"] * 3,
            "failure_mode": ["vibration"] * 3,
            "sensor": ["vibration", "oil debris", "bearing temperature"],
        }
    )
    prompt = load_prompt("relevance_check", REPO / "prompts")
    with FakeOpenAI(relevance_answer) as server, teacher(server, tmp_path) as t:
        relevance = check_relevance(t, prompt, items)
    assert relevance["relevant"].tolist() == [True, False, pd.NA]
    assert relevance.loc[0, "reason"] == "Vibration grows as the impeller wears."
    assert relevance.loc[2, "ok"] == False and relevance.loc[2, "text"] == "It depends on the installation."  # noqa: E712
    kg = from_tables(tables)
    add_discovered_sensors(kg, discovered[1], load_prompt("sensor_discovery", REPO / "prompts"))
    assert add_relevance(kg, relevance, prompt) == 1
    edge = kg.graph.edges["sensor:vibration", "failure_mode:vibration", "relevant_to|equipment_class:Pumps"]
    assert edge["source"] == "llm" and edge["attrs"]["reason"] == "Vibration grows as the impeller wears."


def test_key_entities_extend_the_kg(tables):
    from alia.data.kg import add_key_entities

    kg = from_tables(tables)
    entities = pd.DataFrame(
        {
            "source_doc_id": ["d1", "d1", "d1"],
            "equipment_class": ["Pumps"] * 3,
            "kind": ["entity", "sensor", "failure_mode"],
            "entity": ["impeller", "vibration", "overheating"],
            "cache_key": ["k1"] * 3,
        }
    )
    added = add_key_entities(kg, entities, load_prompt("key_entities", REPO / "prompts"))
    counts = kg.counts()
    assert added == 3 + 3  # three related_to, three co_occurs_with pairs
    assert counts["nodes"]["entity"] == 1 and counts["edges"]["co_occurs_with"] == 3
    assert kg.neighbours("equipment_class:Pumps", "related_to") == [
        "entity:impeller",
        "failure_mode:overheating",
        "sensor:vibration",
    ]
    assert kg.graph.nodes["sensor:vibration"]["source"] == "table"  # an existing node is reused
