"""D_eval question builder: counts per cell, one correct option, the answer key, no D_source asset."""

import pandas as pd
import pytest
from conftest import RAW

from alia.mcqa import DIRECTIONS, FORMS, build_questions, load_question_set, to_table


@pytest.fixture(scope="module")
def matrix(tables) -> pd.DataFrame:
    return tables["fm_sensor_matrix"]


@pytest.fixture(scope="module")
def questions(matrix) -> pd.DataFrame:
    return build_questions(matrix, questions_per_cell=3, seed=7)


def test_counts_per_asset_direction_and_form(questions, matrix):
    counts = questions.groupby(["asset_name", "direction", "form"]).size()
    assert len(counts) == matrix["asset"].nunique() * len(DIRECTIONS) * len(FORMS) == 40
    assert (counts == 3).all()
    assert questions["id"].is_unique and len(questions) == 120


def test_exactly_one_correct_option_and_it_is_the_answer_key(questions, matrix):
    ticks = {(r.asset, r.failure_mode, r.sensor): r.relevant for r in matrix.itertuples()}
    for q in questions.itertuples():
        assert 2 <= len(q.options) <= 5 and len(set(q.options)) == len(q.options)
        assert sum(q.correct) == 1 and q.correct[q.answer_index]
        # every option's tick in the ISO 17359 matrix: the answer's differs from all the distractors'
        if q.direction == "fm2sensor":
            relevant = [ticks[q.asset_name, q.subject, o] for o in q.options]
        else:
            relevant = [ticks[q.asset_name, o, q.subject] for o in q.options]
        wanted = q.form == "selection"
        assert [r == wanted for r in relevant] == list(q.correct), q.question
        assert q.subject in q.question and ("NOT" in q.question or "least" in q.question) == (not wanted)


def test_seeded_reproducible_and_varied(matrix, questions):
    again = build_questions(matrix, questions_per_cell=3, seed=7)
    pd.testing.assert_frame_equal(questions, again)
    other = build_questions(matrix, questions_per_cell=3, seed=8)
    assert other["question"].tolist() != questions["question"].tolist()
    assert questions["template"].nunique() == 4 and questions["options"].map(len).nunique() == 4
    # the correct option is not always in the same place
    assert questions["answer_index"].nunique() >= 4


def test_option_count_bounds(matrix):
    two = build_questions(matrix, questions_per_cell=2, min_options=2, max_options=2)
    assert set(two["options"].map(len)) == {2}
    with pytest.raises(ValueError, match="min_options"):
        build_questions(matrix, 1, min_options=1)


def test_no_question_about_a_d_source_asset(matrix, tables):
    classes = tables["equipment_classes"]["equipment_class"].tolist()
    questions = build_questions(matrix, 1, source_assets=classes)
    assert set(questions["asset_name"]) == set(tables["eval_assets"]["asset"])
    assert not set(questions["asset_name"]) & set(classes)
    leaked = matrix.assign(asset=matrix["asset"].replace("Pump", "Pumps "))  # a D_source class, respelled
    with pytest.raises(ValueError, match="D_source assets.*pumps"):
        build_questions(leaked, 1, source_assets=classes)


def test_expert_set_in_the_same_schema():
    expert = load_question_set(str(RAW / "dev" / "expert_mcqa_50.jsonl"))
    table = to_table(expert)
    assert table.num_rows == 50 and table.schema.names[:3] == ["id", "question", "options"]
    assert expert["direction"].value_counts().to_dict() == {"other": 18, "sensor2fm": 18, "fm2sensor": 14}
    assert (expert["form"] == "elimination").sum() == 8
