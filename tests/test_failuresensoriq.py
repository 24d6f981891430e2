import json
import shutil

import pytest
from conftest import RAW

from alia.core.io import TableError
from alia.student.failuresensoriq import HUB_DATASET, HUB_FILES, load_mcqa

EXPERT = RAW / "dev" / "expert_mcqa_50.jsonl"


def test_expert_questions():
    questions = load_mcqa(str(EXPERT))
    assert len(questions) == 50
    # 49 questions with 4 options and one with 5, each with exactly one correct option
    assert questions["options"].map(len).value_counts().to_dict() == {4: 49, 5: 1}
    assert (questions["correct"].map(sum) == 1).all()
    first = questions.iloc[0]
    assert first["options"][first["correct"].index(True)] == "Seal"
    assert first["option_ids"] == ["A", "B", "C", "D"]


def _write_lines(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("question"), "row 2, column 'question': missing field 'question'"),
        (
            lambda r: r.update(option_ids=["A", "A", "B", "C"]),
            "row 2, column 'option_ids': expected 4 distinct",
        ),
        (lambda r: r.update(correct=[False, True]), "row 2, column 'correct': expected 4 booleans"),
        (lambda r: r.update(correct=[False] * 4), "row 2, column 'correct': no option is marked correct"),
        (
            lambda r: r.update(options=["only one"], correct=[True]),
            "row 2, column 'options': expected a list",
        ),
    ],
)
def test_malformed_record(tmp_path, change, message):
    records = [json.loads(line) for line in EXPERT.read_text().splitlines()[:3]]
    change(records[1])
    _write_lines(tmp_path / "q.jsonl", records)
    with pytest.raises(TableError, match=message):
        load_mcqa(str(tmp_path / "q.jsonl"))


def test_published_dataset_through_the_hub_cache(tmp_path, monkeypatch):
    """`hub` goes through huggingface_hub; offline it reads the same file from the hub cache."""
    commit = "0" * 40
    repo = tmp_path / "hub" / f"datasets--{HUB_DATASET.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit / HUB_FILES["single_true_multi_choice_qa"]
    snapshot.parent.mkdir(parents=True)
    shutil.copy(EXPERT, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    questions = load_mcqa("hub")
    assert len(questions) == 50
    with pytest.raises(ValueError, match="unknown FailureSensorIQ config 'nope'"):
        load_mcqa("hub:nope")


def test_the_published_perturbed_and_multi_correct_files_load(tmp_path):
    """SimplePert's records (labels "P)".., no relevancy) and the multi-correct file's (no asset_name),
    their fields as published, go through the one loader: the perturbed count in Acc_All only."""
    perturbed = {
        "question": "Which sensor out of the choices can indicate rotor windings fault in electric motor?",
        "option_ids": ["P)", "Q)", "R)", "S)", "T)"],
        "options": ["voltage", "coast down time", "torque", "partial discharge", "resistance"],
        "question_first": True,
        "correct": [False, False, True, False, False],
        "text_type": "choice",
        "subject": "failure_mode_sensor_analysis",
        "id": 2,
    }
    multi = {
        **{k: v for k, v in perturbed.items() if k != "option_ids"},
        "correct": [True, False, True, False, False],
        "relevancy": "relevant_sensors_for_failure_mode",
        "question_type": "mcp2_positive",
    }
    _write_lines(tmp_path / "pert.jsonl", [perturbed])
    _write_lines(tmp_path / "multi.jsonl", [multi])
    pert, both = load_mcqa(str(tmp_path / "pert.jsonl")), load_mcqa(str(tmp_path / "multi.jsonl"))
    assert pert.iloc[0]["option_ids"] == ["P", "Q", "R", "S", "T"] and pert.iloc[0]["relevancy"] == ""
    assert pert.iloc[0]["id"] == 2
    assert both.iloc[0]["option_ids"] == list("ABCDE") and both.iloc[0]["asset_name"] == ""
    assert sum(both.iloc[0]["correct"]) == 2
