"""The transfer rung (alia.student.transfer): folds, facts, corpora, the lookup baseline, the pooled
table; and one real run of `alia exp transfer` on a 2-layer model with a fake teacher."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_openai import FakeOpenAI

from alia.data.tables import write_tables
from alia.student.questions import build_questions, to_table
from alia.student.transfer import (
    asset_folds,
    direction_table,
    facts_lookup,
    pooled_results,
    rung_table,
    shuffle_failure_modes,
    teacher_requests,
    template_corpus,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def matrix(tables) -> pd.DataFrame:
    return tables["fm_sensor_matrix"]


def test_the_committed_rung_config_is_valid_and_a_misspelt_key_is_not(tmp_path):
    from alia.student.transfer_run import load_config

    committed = REPO / "configs" / "transfer" / "cpu.yaml"
    config = load_config(committed)
    assert config.folds == 2 and config.in_sample and "shuffled" in config.arms
    (tmp_path / "bad.yaml").write_text(committed.read_text().replace("folds: 2", "fold: 2"))
    with pytest.raises(ValueError, match="fold"):  # one line naming the setting, before any model loads
        load_config(tmp_path / "bad.yaml")


def test_folds_partition_the_assets_and_follow_the_seed(matrix):
    assets = sorted(matrix["asset"].unique())
    folds = asset_folds(assets, 5, seed=0)
    assert sorted(a for fold in folds for a in fold) == assets
    assert [len(f) for f in folds] == [2, 2, 2, 2, 2]
    assert asset_folds(assets, 5, seed=0) == folds
    assert asset_folds(assets, 5, seed=1) != folds
    with pytest.raises(ValueError, match="transfer folds: 11"):
        asset_folds(assets, 11)


def test_shuffled_facts_keep_every_count_and_move_every_failure_mode(matrix):
    shuffled = shuffle_failure_modes(matrix, seed=0)
    assert len(shuffled) == len(matrix)
    key = ["asset", "sensor"]
    assert (shuffled.groupby(key)["relevant"].sum() == matrix.groupby(key)["relevant"].sum()).all()
    for asset, part in matrix.groupby("asset"):
        before = part[part["relevant"]].groupby("failure_mode")["sensor"].apply(frozenset)
        after = (
            shuffled[(shuffled["asset"] == asset) & shuffled["relevant"]]
            .groupby("failure_mode")["sensor"]
            .apply(frozenset)
        )
        assert sorted(map(len, before)) == sorted(map(len, after))  # each failure mode's count, permuted
        assert (before.reindex(after.index) != after).mean() > 0.5  # most failure modes read wrong facts


def test_template_corpora_write_only_the_facts_they_are_given(matrix):
    train = matrix[~matrix["asset"].isin(["Pump", "Fan"])]
    ticks = int(train["relevant"].sum())
    both = template_corpus(train, "chat")
    one_way = template_corpus(train, "chat", ("fm2sensor",))
    assert len(both) == 2 * ticks and len(one_way) == ticks
    assert set(one_way["answer"]) <= set(train["sensor"])
    assert set(both["asset"]) == set(train["asset"])  # no held-out asset is written about
    text = template_corpus(train, "text")
    assert not text["text"].str.contains("pump|fan", case=False, regex=True).any()


def test_the_teacher_arm_asks_about_every_tick_of_its_assets(matrix):
    train = matrix[matrix["asset"].isin(["Pump", "Compressor"])]
    requests = teacher_requests(train, facts_per_document=3)
    assert set(requests["equipment_class"]) == {"Pump", "Compressor"}
    pairs = requests[requests["relation"] == "asset_sensor_failure_mode"]["facts"].explode()
    assert len(pairs) == int(train["relevant"].sum())
    assert all(" helps detect " in fact for fact in pairs)


def _two_assets() -> pd.DataFrame:
    """Two assets with the same ticks: what the first teaches about the second is all true."""
    cells = [(fm, s, (i + j) % 3 == 0) for i, fm in enumerate("FGHI") for j, s in enumerate("abcde")]
    return pd.DataFrame(
        [(asset, f"fm {fm}", f"sensor {s}", r) for asset in ("Alpha", "Beta") for fm, s, r in cells],
        columns=["asset", "failure_mode", "sensor", "relevant"],
    )


def test_the_lookup_answers_from_true_facts_and_fails_from_shuffled_ones():
    matrix = _two_assets()
    questions = build_questions(matrix[matrix["asset"] == "Beta"], max_options=4)
    training = matrix[matrix["asset"] == "Alpha"]
    assert facts_lookup(questions, training).mean() == 1.0
    assert facts_lookup(questions, shuffle_failure_modes(training, seed=0)).mean() < 0.8


def test_the_pooled_table_pairs_each_arm_with_the_untuned_student():
    questions = build_questions(_two_assets(), max_options=4)
    rng = np.random.default_rng(0)
    untuned = questions.assign(letter_acc=rng.integers(0, 2, len(questions)).astype(float))
    untuned["ll_acc"] = untuned["letter_acc"]
    right = untuned.assign(letter_acc=1.0, ll_acc=1.0)
    results = pooled_results(
        {"same_chat": untuned.sample(frac=1, random_state=0), "right_chat": right}, untuned
    )
    assert results["same_chat"]["vs_untuned"]["letter"]["all"]["delta"] == 0.0
    assert results["same_chat"]["vs_untuned"]["letter"]["all"]["p_mcnemar"] == 1.0
    gain = results["right_chat"]["vs_untuned"]["loglikelihood"]["all"]
    assert gain["delta"] == pytest.approx(1 - untuned["ll_acc"].mean(), abs=1e-4)
    assert gain["ci95"][0] > 0 and gain["worse"] == 0
    assert results["right_chat"]["letter_acc_sel"] == 1.0
    table = rung_table(results)
    assert "| right_chat | " in table and f"{gain['delta']:+.3f}" in table
    by_direction = results["right_chat"]["vs_untuned_by_direction"]
    assert set(by_direction) == {"fm2sensor", "sensor2fm"}
    assert sum(by_direction[d]["letter"]["all"]["questions"] for d in by_direction) == len(questions)
    assert direction_table(results).count("\n") == 4  # header, rule, two arms


def _project(root: Path, tables, tiny_lm: Path) -> None:
    """What `alia exp transfer` reads from the default run: params.yaml, the tables, D_eval and the
    pretrained student (here the 2-layer model)."""
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    shutil.copytree(REPO / "prompts", root / "prompts")
    write_tables(tables, root / "data" / "tables")
    shutil.copy(REPO / "data" / "vocabulary_rules.yaml", root / "data" / "vocabulary_rules.yaml")
    (root / "data" / "eval" / "questions").mkdir(parents=True)
    questions = build_questions(tables["fm_sensor_matrix"], seed=0)
    to_table(questions).to_pandas().to_parquet(root / "data" / "eval" / "questions" / "d_eval.parquet")
    (root / "models" / "pretrained").mkdir(parents=True)
    (root / "models" / "pretrained" / "student_instruct").symlink_to(tiny_lm)


def _passage(messages: list[dict]) -> str:
    facts = [line[2:] for line in messages[-1]["content"].splitlines() if line.startswith("- ")]
    if "sensors are used to monitor" in messages[-1]["content"]:
        facts = facts[:1]  # a sensor passage states its first fact alone: coverage 1/3 where it has 3
    return " ".join(f"In practice, {fact} on this machine." for fact in facts)


@pytest.mark.slow
def test_a_rung_runs_resumes_and_scores_only_held_out_assets(tmp_path, monkeypatch, tables, tiny_lm):
    from alia.cli import main

    _project(tmp_path, tables, tiny_lm)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with FakeOpenAI(_passage) as server:
        config = {
            "folds": 2,
            "arms": {
                "template": ["chat"],
                "shuffled": ["chat"],
                "teacher": ["text"],
                "teacher_checked": ["text"],
                "teacher_random": ["text"],
            },
            "filters": {"min_fact_coverage": 0.5},
            "questions_per_fold": 8,
            "qa_directions": ["fm2sensor"],
            "in_sample": True,
            "teacher": {"base_url": server.base_url, "model": "fake-model", "api_key_env": None},
            "sft": {"max_steps": 1, "save_steps": 1},
        }
        Path("transfer.yaml").write_text(json.dumps(config))
        assert main(["exp", "transfer", "transfer.yaml"]) == 0
        calls = len(server.requests)
        assert main(["exp", "transfer", "transfer.yaml"]) == 0  # resumed: nothing asked or trained again
        assert len(server.requests) == calls > 0
    summary = json.loads(Path("metrics/transfer/transfer.json").read_text())
    units = {"template_chat", "shuffled_chat", "teacher_text", "teacher_checked_text", "teacher_random_text"}
    assert set(summary["results"]) == units | {f"{unit}_in_sample" for unit in units}
    assert set(summary["training"]) == {f"fold{k}_{unit}" for unit in units for k in (0, 1)}
    assert all(t["steps"] == 1 and t["first_loss"] > 0 for t in summary["training"].values())
    costs = json.loads(Path("data/transfer/costs.json").read_text())  # the second run's
    assert not [name for name, cost in costs.items() if "train_s" in cost or "score_s" in cost]
    for k, held_out in enumerate(summary["folds"]):
        for name in ("untuned", "template_chat", "shuffled_chat", "teacher_text"):
            scored = pd.read_parquet(f"data/transfer/predictions/fold{k}_{name}.parquet")
            assert len(scored) == 8 and set(scored["asset_name"]) <= set(held_out)
            if name != "untuned":  # the leak by design: about the training assets only
                scored = pd.read_parquet(f"data/transfer/predictions/fold{k}_{name}_in_sample.parquet")
                assert len(scored) == 8 and not set(scored["asset_name"]) & set(held_out)
        corpus = pd.read_parquet(f"data/transfer/corpora/fold{k}_teacher_text.parquet")
        assert len(corpus) and not set(corpus["equipment_class"]) & set(held_out)
        # the filter keeps the passages that state half their facts or more; the random arm as many
        checked = pd.read_parquet(f"data/transfer/corpora/fold{k}_teacher_checked_text.parquet")
        drawn = pd.read_parquet(f"data/transfer/corpora/fold{k}_teacher_random_text.parquet")
        assert (checked["fact_coverage"] >= 0.5).all() and (corpus["fact_coverage"] < 0.5).any()
        assert 0 < len(checked) == len(drawn) < len(corpus) and set(drawn["doc_id"]) <= set(corpus["doc_id"])
        assert summary["teacher_corpora"][f"fold{k}_teacher_checked_text"]["passages"] == len(checked)
    for name, result in summary["results"].items():
        assert result["questions"] == 16, name
        assert {"letter", "loglikelihood"} <= set(result["vs_untuned"])
    # the facts' own effect: a true-fact arm against the shuffled arm of its format, where there is one
    assert {"letter", "loglikelihood"} <= set(summary["results"]["template_chat"]["vs_shuffled"])
    assert "vs_shuffled" not in summary["results"]["teacher_text"]
    # the filter's own effect: checked against all passages and against as many at random
    checked = summary["results"]["teacher_checked_text"]
    assert {"letter", "loglikelihood"} <= set(checked["vs_teacher"]) & set(checked["vs_teacher_random"])
    assert "vs_teacher" in summary["results"]["teacher_random_text"]
    assert {"true_facts", "shuffled_facts"} == set(summary["facts_lookup"])
    assert "oracle facts" in Path("metrics/transfer/transfer.md").read_text()
