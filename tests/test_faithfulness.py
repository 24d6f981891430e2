"""Fact faithfulness of KD passages (alia.kd.faithfulness) on hand-made passages whose coverage, foreign
entities and contradictions are known; the filters and their rejects; the LLM judge against a real
HTTP server on 127.0.0.1; the entity descriptions' quality (alia.embedder.description_quality)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SMOLLM2

from alia.data.vocabulary import Canonicaliser
from alia.kd.faithfulness import FactChecker, FactFilter, Vocabulary, denials, summary

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checker(tables):
    relevance = pd.DataFrame(  # the relevance check's answers for a D_source class
        {
            "equipment_class": ["Compressors", "Compressors"],
            "failure_mode": ["bearing wear / bearing damage", "misalignment"],
            "sensor": ["oil debris", "vibration"],
            "relevant": pd.array([False, True], dtype="boolean"),
        }
    )
    vocabulary = Vocabulary.from_tables(tables, Canonicaliser.from_yaml(REPO / "data/vocabulary_rules.yaml"))
    return FactChecker(vocabulary, denials(relevance, tables["fm_sensor_matrix"]))


FACTS = [["vibration", "misalignment"], ["temperature"], ["bearing wear / bearing damage"]]


@pytest.mark.parametrize(
    "text, coverage, foreign, contradictions",
    [
        # every fact, in other spellings: a raw typo, plurals, capitals, one part of a compound label
        (
            "Vibration sensors reveal Misalignment of the shaft. "
            "Temparature trends rise as bearing damage grows.",
            1.0,
            [],
            [],
        ),
        # one fact of three; a sensor and a class that are no fact of the passage are foreign
        (
            "Vibration monitoring of compressors finds misalignment; ultrasound listens to the pumps.",
            1 / 3,
            ["pump", "ultrasound"],
            [],
        ),
        # a pair the relevance check answered "No" for this class, asserted
        ("Oil debris detects bearing wear early.", 1 / 3, ["oil debris"], ["oil debris -> bearing wear"]),
        # the same pair negated: no assertion, so no contradiction (a negated pair is never counted)
        ("Oil debris does not indicate bearing wear.", 1 / 3, ["oil debris"], []),
        ("Oil debris can't detect bearing wear.", 1 / 3, ["oil debris"], []),
        # named together without a detection verb: no assertion either
        ("Oil debris and bearing wear are both discussed in the manual.", 1 / 3, ["oil debris"], []),
        # "other" and "unknown" (ISO 14224 failure modes) mean nothing in prose
        ("Other issues are unknown.", 0.0, [], []),
    ],
)
def test_coverage_foreign_entities_and_contradictions(checker, text, coverage, foreign, contradictions):
    checked = checker.check(text, "Compressors", FACTS)
    assert checked["fact_coverage"] == pytest.approx(coverage)
    assert checked["foreign_entities"] == foreign
    assert checked["contradictions"] == contradictions


def test_the_tables_deny_a_pair_for_their_asset(checker):
    # ISO 17359: axial flux does not detect bearing damage on an electric motor; coast down time does
    text = "Axial flux detects bearing damage. Coast down time helps spot bearing damage."
    checked = checker.check(text, "Electric motor", [["coast down time", "bearing damage"]])
    assert checked["contradictions"] == ["axial flux -> bearing damage"]
    assert checked["fact_coverage"] == 1.0 and checked["foreign_entities"] == ["axial flux"]
    # the same words about a class the tables say nothing of contradict nothing
    assert checker.check(text, "Top drives", [])["contradictions"] == []


def test_a_fact_outside_the_vocabulary_is_matched_word_for_word(checker):
    facts = [["leak detector sensor (e.g., sus, subseal)"], ["fts"]]
    checked = checker.check("The FTS event is logged.", "Top drives", facts)
    assert checked["fact_coverage"] == 0.5
    assert np.isnan(checker.check("Anything.", "Top drives", [])["fact_coverage"])  # no facts: no coverage


def _corpus():
    return pd.DataFrame(
        {
            "doc_id": ["a", "b", "c"],
            "equipment_class": ["Compressors"] * 3,
            "fact_entities": [FACTS] * 3,
            "text": [
                "Vibration reveals misalignment; temperature and bearing wear are trended.",
                "Oil debris detects bearing wear early.",
                "Ultrasound and thermography inspect the pumps.",
            ],
        }
    )


def test_filters_drop_rows_into_the_rejects_file_with_the_reason(checker, tmp_path):
    rejects = tmp_path / "rejects.parquet"
    filters = {"min_fact_coverage": None, "max_contradictions": 0, "max_foreign_entities": 2}
    with FactFilter(checker, filters, rejects) as facts:
        kept = facts(_corpus())
    assert kept["doc_id"].tolist() == ["a"]
    assert facts.counts == {
        "checked": 3,
        "min_fact_coverage": 0,
        "max_foreign_entities": 1,
        "max_contradictions": 1,
        "min_judge_faithfulness": 0,
        "kept": 1,
    }
    dropped = pd.read_parquet(rejects)
    assert dict(zip(dropped["doc_id"], dropped["reason"], strict=True)) == {
        "b": "max_contradictions",
        "c": "max_foreign_entities",
    }
    assert dropped.loc[dropped["doc_id"] == "c", "foreign_entities"].iloc[0].tolist() == [
        "pump",
        "thermography",
        "ultrasound",
    ]
    assert summary(kept)["full_coverage"] == 1.0
    with pytest.raises(ValueError, match="unknown setting"):
        FactFilter(checker, {"min_coverage": 0.5}, rejects)
    with pytest.raises(ValueError, match="judge is off"):
        FactFilter(checker, {"min_judge_faithfulness": 3}, rejects)


def test_filters_off_keep_every_row_and_an_empty_rejects_file(checker, tmp_path):
    with FactFilter(checker, {}, tmp_path / "rejects.parquet") as facts:
        kept = facts(_corpus())
    assert len(kept) == 3 and facts.counts["kept"] == 3
    assert len(pd.read_parquet(tmp_path / "rejects.parquet")) == 0
    assert summary(kept) == {
        "passages": 3,
        "full_coverage": round(1 / 3, 4),
        "mean_coverage": round((1 + 1 / 3 + 0) / 3, 4),
        "mean_foreign_entities": 1.333,
        "contradictions": 1,
        "passages_with_contradictions": 1,
    }


def test_the_judge_scores_each_passage_through_the_one_client(checker, tmp_path):
    from conftest import teacher_config

    from alia.kd.judge import Judge
    from alia.llm.client import LLMClient
    from alia.llm.simulated import SimulatedServer

    with SimulatedServer() as server:
        config = teacher_config(base_url=server.base_url, model="simulated", api_key_env=None)
        with LLMClient(config, tmp_path / "cache.sqlite") as teacher:
            judge = Judge(teacher, {"temperature": 0.0, "max_tokens": 160})
            with FactFilter(checker, {"min_judge_faithfulness": 3}, tmp_path / "r.parquet", judge) as facts:
                kept = facts(_corpus())
            calls = teacher.run_stats()
    scores = pd.concat([kept, pd.read_parquet(tmp_path / "r.parquet")])
    assert scores["judge_faithfulness"].between(1, 5).all() and scores["judge_fluency"].between(1, 5).all()
    assert (scores["judge_reason"] != "").all()
    assert (kept["judge_faithfulness"] >= 3).all()
    assert facts.counts["min_judge_faithfulness"] == 3 - len(kept)
    assert calls["requests"] >= 3


def test_description_quality_reads_length_perplexity_and_groundedness(tmp_path):
    from alia.core.models import prepare_causal_lm
    from alia.embedder.description_quality import check_descriptions

    model = tmp_path / "student_instruct"  # as prepare_models writes it: a clean clone has no models/
    prepare_causal_lm(SMOLLM2, model)
    rows = pd.DataFrame({"entities": [["Pump"]], "relevant": [["vibration", "flow"]]})
    entities = pd.DataFrame(
        {
            "entity": ["Pump", "vibration", "flow"],
            "description": [
                "A pump moves fluid; its vibration and flow are monitored.",
                "zq xv blorp wug vibration vibration qq",
                "",
            ],
        }
    )
    checked = check_descriptions(entities, rows, model, {"max_perplexity": 2000.0, "min_groundedness": 0.5})
    assert checked["description_words"].tolist() == [10, 7, 0]
    fluent, garbled = checked["description_perplexity"].iloc[:2]  # ~470 and ~8,100 under SmolLM2-135M
    assert fluent < 2000 < garbled and garbled > 10 * fluent
    assert np.isnan(checked["description_perplexity"].iloc[2])
    # "pump", "moves", "fluid", "vibration", "flow", "monitored": pump, vibration, flow are its graph's
    assert checked["description_groundedness"].iloc[0] == pytest.approx(3 / 6)
    assert checked["rejected"].tolist() == ["", "max_perplexity", ""]
