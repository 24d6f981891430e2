"""D_eval as FailureSensorIQ builds it: one question per tick and per empty cell in each direction,
the published labels and option-count mix, one correct option from the answer key, no D_source asset;
the multi-correct form; the stratified sample and the perturbed copy."""

import json

import pandas as pd
import pytest
from conftest import RAW

from alia.student.questions import (
    PERTURBED_LETTERS,
    build_multi_correct,
    build_questions,
    load_question_set,
    perturb,
    stratified_sample,
    to_table,
)


@pytest.fixture(scope="module")
def matrix(tables) -> pd.DataFrame:
    return tables["fm_sensor_matrix"]


@pytest.fixture(scope="module")
def questions(matrix) -> pd.DataFrame:
    return build_questions(matrix, seed=7)


def test_one_question_per_tick_and_per_empty_cell_as_published(questions, matrix):
    # the published set: 470 + 453 selection, 872 + 872 elimination, 2,667 in all
    counts = questions.groupby(["direction", "form"]).size().to_dict()
    assert counts == {
        ("fm2sensor", "elimination"): 872,
        ("fm2sensor", "selection"): 470,
        ("sensor2fm", "elimination"): 872,
        ("sensor2fm", "selection"): 453,
    }
    assert int(matrix["relevant"].sum()) == 470 and int((~matrix["relevant"]).sum()) == 872
    assert questions["options"].map(len).value_counts().to_dict() == {5: 1525, 2: 487, 4: 389, 3: 266}
    assert questions["asset_name"].value_counts()["Power transformer"] == 544
    assert questions["id"].is_unique
    # each cell once per direction: a tick's selection question, an empty cell's elimination question
    for (direction, form), part in questions.groupby(["direction", "form"]):
        cells = set(zip(part["asset_name"], part["failure_mode"], part["sensor"], strict=True))
        assert len(cells) == len(part), (direction, form)


def test_published_labels(questions):
    assert set(zip(questions["direction"], questions["form"], questions["relevancy"], strict=True)) == {
        ("fm2sensor", "selection", "relevant_sensors_for_failure_mode"),
        ("fm2sensor", "elimination", "irrelevant_sensors_for_failure_mode"),
        ("sensor2fm", "selection", "relevant_failure_modes_for_sensor"),
        ("sensor2fm", "elimination", "irrelevant_failure_modes_for_sensor"),
    }
    assert set(zip(questions["form"], questions["question_type"], strict=True)) == {
        ("selection", "mcp1_positive"),
        ("elimination", "mcp1_negative"),
    }
    assert (questions["subject"] == "failure_mode_sensor_analysis").all()
    assert (
        questions["option_ids"].map(list).equals(questions["options"].map(lambda o: list("ABCDE"[: len(o)])))
    )


def test_exactly_one_correct_option_and_it_is_the_answer_key(questions, matrix):
    ticks = {(r.asset, r.failure_mode, r.sensor): r.relevant for r in matrix.itertuples()}
    for q in questions.itertuples():
        assert len(set(q.options)) == len(q.options)
        assert sum(q.correct) == 1 and q.correct[q.answer_index]
        anchor = q.failure_mode if q.direction == "fm2sensor" else q.sensor
        if q.direction == "fm2sensor":
            relevant = [ticks[q.asset_name, q.failure_mode, o] for o in q.options]
            assert q.options[q.answer_index] == q.sensor
        else:
            relevant = [ticks[q.asset_name, o, q.sensor] for o in q.options]
            assert q.options[q.answer_index] == q.failure_mode
        wanted = q.form == "selection"
        assert [r == wanted for r in relevant] == list(q.correct), q.question
        assert anchor in q.question and ("NOT" in q.question or "least" in q.question) == (not wanted)


def test_seeded_reproducible_and_varied(matrix, questions):
    pd.testing.assert_frame_equal(questions, build_questions(matrix, seed=7))
    other = build_questions(matrix, seed=8)
    assert other["question"].tolist() != questions["question"].tolist()
    assert questions["template"].nunique() == 4
    assert questions["answer_index"].value_counts().min() > 300  # the answer is anywhere


def test_option_count_bounds(matrix):
    two = build_questions(matrix, min_options=2, max_options=2)
    assert set(two["options"].map(len)) == {2} and len(two) == 2667
    fewer = build_questions(matrix, min_options=5, max_options=5)
    assert set(fewer["options"].map(len)) == {5} and len(fewer) == 1525
    with pytest.raises(ValueError, match="min_options"):
        build_questions(matrix, min_options=1)


def test_no_question_about_a_d_source_asset(matrix, tables):
    classes = tables["equipment_classes"]["equipment_class"].tolist()
    questions = build_questions(matrix, source_assets=classes)
    assert set(questions["asset_name"]) == set(tables["eval_assets"]["asset"])
    leaked = matrix.assign(asset=matrix["asset"].replace("Pump", "Pumps "))  # a D_source class, respelled
    with pytest.raises(ValueError, match="D_source assets.*pumps"):
        build_questions(leaked, source_assets=classes)
    with pytest.raises(ValueError, match="D_source assets.*pumps"):
        build_multi_correct(leaked, source_assets=classes)


def test_multi_correct_questions(matrix):
    multi = build_multi_correct(matrix, correct=2, seed=0)
    ticks = {(r.asset, r.failure_mode, r.sensor): r.relevant for r in matrix.itertuples()}
    assert (multi["correct"].map(sum) == 2).all() and (multi["answer_index"] == -1).all()
    assert multi["options"].map(len).max() == 5 and (multi["form"] == "selection").all()
    for q in multi.itertuples():
        if q.direction == "fm2sensor":
            relevant = [ticks[q.asset_name, q.failure_mode, o] for o in q.options]
        else:
            relevant = [ticks[q.asset_name, o, q.sensor] for o in q.options]
        assert relevant == list(q.correct) and " 2 " in q.question
    # one question per tick whose row (column) holds another tick and an empty cell
    assert len(multi) == 876


def test_stratified_sample(questions):
    sample = stratified_sample(questions, 800, seed=0)
    assert len(sample) == 800 and sample.index.is_monotonic_increasing
    share = sample.groupby(["asset_name", "direction", "form"]).size() / 800
    full = questions.groupby(["asset_name", "direction", "form"]).size() / len(questions)
    assert (share - full).abs().max() < 1 / 800 + 1e-9  # every stratum within one question of its share
    pd.testing.assert_frame_equal(sample, stratified_sample(questions, 800, seed=0))
    assert not sample.index.equals(stratified_sample(questions, 800, seed=1).index)
    assert len(stratified_sample(questions, 0)) == len(questions)


def test_perturbation_keeps_every_answer(questions, matrix):
    copy = perturb(questions, seed=0)
    for original, moved in zip(questions.itertuples(), copy.itertuples(), strict=True):
        assert moved.options[moved.answer_index] == original.options[original.answer_index]
        assert sorted(moved.options) == sorted(original.options)
        assert list(moved.options) != list(original.options)  # always another order
        assert list(moved.option_ids) == list(PERTURBED_LETTERS[: len(moved.options)])
    multi = build_multi_correct(matrix)
    for original, moved in zip(multi.itertuples(), perturb(multi).itertuples(), strict=True):
        right = {o for o, c in zip(original.options, original.correct, strict=True) if c}
        assert {o for o, c in zip(moved.options, moved.correct, strict=True) if c} == right


def test_expert_and_published_files_in_the_same_schema(tmp_path, questions):
    expert = load_question_set(str(RAW / "dev" / "expert_mcqa_50.jsonl"))
    assert to_table(expert).schema == to_table(questions).schema
    assert expert["direction"].value_counts().to_dict() == {"other": 18, "sensor2fm": 18, "fm2sensor": 14}
    assert (expert["form"] == "elimination").sum() == 8
    # a built question written as a published record reads back as it was built
    record = questions.iloc[0]
    published = {
        "subject": "failure_mode_sensor_analysis",
        "id": 0,
        "question": record["question"],
        "options": list(record["options"]),
        "option_ids": list(record["option_ids"]),
        "question_first": True,
        "correct": [bool(c) for c in record["correct"]],
        "text_type": "choice",
        "asset_name": record["asset_name"],
        "relevancy": record["relevancy"],
        "question_type": record["question_type"],
    }
    (tmp_path / "all.jsonl").write_text(json.dumps(published) + "\n")
    loaded = load_question_set(str(tmp_path / "all.jsonl")).iloc[0]
    for column in (
        "question",
        "asset_name",
        "relevancy",
        "question_type",
        "answer_index",
        "direction",
        "form",
    ):
        assert loaded[column] == record[column], column
