from pathlib import Path

import pytest
from conftest import REPO

from alia.llm.prompts import (
    KeyEntities,
    QAPairs,
    json_parser,
    load_prompt,
    parse_numbered_list,
    parse_yes_no,
)

PROMPTS = REPO / "prompts"
SEED_PROMPTS = [
    "sensor_discovery",
    "relevance_check",
    "kd_base",
    "kd_rephrase_toddler",
    "kd_rephrase_scholar",
    "kd_rephrase_wikipedia",
    "kd_rephrase_qa",
    "kd_qa",
    "key_entities",
]


@pytest.mark.parametrize("name", SEED_PROMPTS)
def test_seed_prompts_load(name):
    prompt = load_prompt(name, PROMPTS)
    assert len(prompt.hash) == 16 and prompt.user


def test_rendering_and_missing_variables():
    prompt = load_prompt("relevance_check", PROMPTS)
    system, user = prompt.messages(equipment_class="Pumps", failure_mode="bearing wear", sensor="oil debris")
    assert system["role"] == "system" and "reliability engineer" in system["content"]
    assert user["content"].splitlines()[:3] == [
        "Asset: Pumps",
        "Failure mode: bearing wear",
        "Sensor: oil debris",
    ]
    # a prompt-file error, in one line: the file, the variable, and what the stage provides
    expected = (
        f"{PROMPTS / 'relevance_check.yaml'}: template error: 'sensor' is undefined; "
        "the stage provides ['equipment_class', 'failure_mode']"
    )
    with pytest.raises(ValueError) as raised:
        prompt.messages(equipment_class="Pumps", failure_mode="bearing wear")
    assert str(raised.value) == expected


def test_kd_base_relations():
    prompt = load_prompt("kd_base", PROMPTS)
    facts = ["vibration detects misalignment", "oil debris detects bearing wear"]
    text = prompt.messages(relation="asset_sensor_failure_mode", equipment_class="Pumps", facts=facts)[1][
        "content"
    ]
    assert "each sensor below helps detect the failure mode" in text
    assert "- vibration detects misalignment\n- oil debris detects bearing wear" in text
    text = prompt.messages(relation="asset_sensor", equipment_class="Pumps", facts=["vibration"])[1][
        "content"
    ]
    assert text.startswith("Write a short technical paragraph explaining how the following sensors")


def test_bad_prompt_files(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("output: essay\nuser: hi\n")
    with pytest.raises(ValueError, match="a.yaml: output must be one of"):
        load_prompt("a", tmp_path)
    (tmp_path / "b.yaml").write_text("output: text\nuser: |\n  hello {{ name\n")
    with pytest.raises(ValueError, match=r"b.yaml, line 1: template error"):
        load_prompt("b", tmp_path)


@pytest.mark.parametrize(
    "text, items",
    [
        ("1. Vibration\n2. Temperature\n3. Oil debris", ["Vibration", "Temperature", "Oil debris"]),
        ("Sensors:\n1) **Vibration sensor**.\n2) Thermocouple;\n", ["Vibration sensor", "Thermocouple"]),
        ("- vibration\n* acoustic emission\n• current", ["vibration", "acoustic emission", "current"]),
        ("1. vibration\n2. vibration\n3. speed", ["vibration", "speed"]),
    ],
)
def test_numbered_lists(text, items):
    assert parse_numbered_list(text) == items


def test_numbered_list_malformed():
    with pytest.raises(ValueError, match="expected a numbered list"):
        parse_numbered_list("Vibration, temperature and speed sensors.")


@pytest.mark.parametrize(
    "text, answer, reason",
    [
        ("Yes\nVibration rises with misalignment.", True, "Vibration rises with misalignment."),
        ("**No**.\nTemperature does not reveal it early.", False, "Temperature does not reveal it early."),
        ("yes, because debris particles come from wear", True, "because debris particles come from wear"),
    ],
)
def test_yes_no(text, answer, reason):
    parsed = parse_yes_no(text)
    assert (parsed.answer, parsed.reason) == (answer, reason)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "got an empty answer"),
        ("Maybe\nit depends", "expected 'Yes' or 'No' on the first line, got 'Maybe'"),
        ("Yes", "expected a reason on the second line"),
    ],
)
def test_yes_no_malformed(text, message):
    with pytest.raises(ValueError, match=message):
        parse_yes_no(text)


def test_json_answers():
    parse = json_parser(KeyEntities)
    fenced = '```json\n{"summary": "Pumps fail.", "entities": ["pump", "seal", "bearing"]}\n```'
    assert parse(fenced).entities == ["pump", "seal", "bearing"]
    qa = json_parser(QAPairs)(
        '{"summary": "s", "qa": [' + ",".join(['{"question": "q", "answer": "a"}'] * 3) + "]}"
    )
    assert len(qa.qa) == 3
    raw_newline = '{"summary": "two\nlines", "entities": ["a", "b", "c"]}'  # a raw newline inside a string
    assert parse(raw_newline).summary == "two\nlines"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "The entities are pump and seal.",
            r"expected a JSON object with the fields \['summary', 'entities'\]",
        ),
        ('{"summary": "s", "entities": ["a", "b",]}', "invalid JSON: "),
        ('{"summary": "s", "entities": ["a", "b"]}', "entities: List should have at least 3 items"),
        ('{"entities": ["a", "b", "c"]}', "summary: Field required"),
        (
            '{"summary": "s", "entities": ["", "b", "c"]}',
            "entities.0: String should have at least 1 character",
        ),
    ],
)
def test_json_malformed(text, message):
    with pytest.raises(ValueError, match=message):
        json_parser(KeyEntities)(text)
