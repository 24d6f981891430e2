"""The industrial embedder: contrastive fine-tuning of a sentence-transformers model on the tasks of
alia.embed_tasks, and its retrieval metrics next to the pretrained model and BM25.

Metrics are sentence-transformers' InformationRetrievalEvaluator's (accuracy@1 = HIT@1, MAP@100,
NDCG@10, binary relevance, ties broken by item id); `ranking_metrics` computes the same numbers from
any ranking, so that BM25 is scored exactly as the embedders are.
"""

from __future__ import annotations

import math
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sentence_transformers.base.sampler import DefaultBatchSampler

from alia.models import require_model

# contrastive: labelled pairs, no in-batch negatives; the others rank a query's positive above the
# batch's other items (mnrl; cached_mnrl, the same with large batches in small memory; gist, which
# skips in-batch items that the pretrained model, its guide, scores above the positive)
LOSSES = ("contrastive", "mnrl", "cached_mnrl", "gist")
NEGATIVES = ("random", "hard")  # a query's negatives: sampled, or mined with the pretrained model
METRICS = {"hit@1": "accuracy@1", "map@100": "map@100", "ndcg@10": "ndcg@10"}  # ours -> the evaluator's key


# --- training data -----------------------------------------------------------------------------


def training_pairs(
    tasks: pd.DataFrame,
    loss: str,
    negatives_per_query: int,
    seed: int,
    mined: dict[str, list[str]] | None = None,
) -> pd.DataFrame:
    """The train split as pairs: (query, item, label 1/0) for `contrastive`, (anchor, positive) for
    the in-batch losses. Negatives are `negatives_per_query` of a query's other candidates: sampled,
    or the first of `mined[query_id]` (hard_negatives); an in-batch loss gets one mined negative per
    pair as a third column."""
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r}: expected one of {LOSSES}")
    rng = np.random.default_rng(seed)
    rows = []
    for query in tasks[tasks["split"] == "train"].itertuples():
        relevant = list(query.relevant)
        relevant_set = set(relevant)
        if loss != "contrastive":
            pairs = [{"anchor": query.query, "positive": item} for item in relevant]
            if mined is not None:  # a query the miner found nothing for gets a sampled negative
                others = [c for c in query.candidates if c not in relevant_set]
                hard = mined.get(query.query_id) or [others[rng.integers(len(others))]]
                pairs = [pair | {"negative": hard[i % len(hard)]} for i, pair in enumerate(pairs)]
            rows += pairs
            continue
        rows += [{"sentence1": query.query, "sentence2": item, "label": 1.0} for item in relevant]
        if mined is not None:
            negatives = mined.get(query.query_id, [])[:negatives_per_query]
        else:
            others = [c for c in query.candidates if c not in relevant_set]
            picked = rng.choice(len(others), min(negatives_per_query, len(others)), replace=False)
            negatives = [others[j] for j in picked]
        rows += [{"sentence1": query.query, "sentence2": item, "label": 0.0} for item in negatives]
    return pd.DataFrame(rows)


def hard_negatives(
    tasks: pd.DataFrame, model: Any, negatives_per_query: int, relative_margin: float
) -> dict[str, list[str]]:
    """Per train query id, its hardest negatives, hardest first: sentence-transformers'
    mine_hard_negatives over each task's candidates, a negative scoring at most (1 - relative_margin)
    x the positive's score. Never an item relevant for the query, never one outside its candidates:
    both are dropped here whatever the miner returns."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    mined: dict[str, list[str]] = {}
    train = tasks[tasks["split"] == "train"]
    for _, group in train.groupby("task", sort=False):
        pairs = [(q.query, item) for q in group.itertuples() for item in q.relevant]
        pool = sorted({c for cs in group["candidates"] for c in cs})
        triplets = mine_hard_negatives(
            Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]}),
            model,
            corpus=pool,
            num_negatives=negatives_per_query,
            relative_margin=relative_margin,
            sampling_strategy="top",
            output_format="triplet",
            output_scores=True,
            verbose=False,
        )
        # a query with several positives has negatives mined against each: the hardest of them all
        by_query: dict[str, dict[str, float]] = {}
        for anchor, negative, scores in zip(
            triplets["anchor"], triplets["negative"], triplets["scores"], strict=True
        ):
            by_query.setdefault(anchor, {})[negative] = scores[1]
        for q in group.itertuples():
            allowed = set(q.candidates) - set(q.relevant)
            scored = by_query.get(q.query, {})
            found = sorted((n for n in scored if n in allowed), key=lambda n: (-scored[n], n))
            mined[q.query_id] = found[:negatives_per_query]
    return mined


class BalancedBatchSampler(DefaultBatchSampler):
    """Batches with round(pos_ratio * batch_size) positive pairs (label 1) and negatives for the rest,
    each pool shuffled every epoch; the epoch ends when a pool runs out."""

    def __init__(
        self, dataset, batch_size: int, drop_last: bool, pos_ratio: float = 0.5, **kwargs: Any
    ) -> None:  # noqa: ANN001
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last, **kwargs)
        if not 0 <= pos_ratio <= 1:
            raise ValueError(f"pos_ratio {pos_ratio}: expected a fraction in [0, 1]")
        labels = np.asarray(dataset["label"], dtype=float)
        self.positives, self.negatives = np.flatnonzero(labels > 0.5), np.flatnonzero(labels <= 0.5)
        self.n_pos = round(pos_ratio * batch_size)
        self.n_neg = batch_size - self.n_pos
        if (self.n_pos and not len(self.positives)) or (self.n_neg and not len(self.negatives)):
            raise ValueError(f"pos_ratio {pos_ratio} needs both positive and negative pairs")

    def __len__(self) -> int:
        per_pool = [len(p) // n for p, n in ((self.positives, self.n_pos), (self.negatives, self.n_neg)) if n]
        return min(per_pool)

    def __iter__(self):  # noqa: ANN204
        rng = np.random.default_rng(self.seed + getattr(self, "epoch", 0))
        positives, negatives = rng.permutation(self.positives), rng.permutation(self.negatives)
        for b in range(len(self)):
            batch = [
                *positives[b * self.n_pos : (b + 1) * self.n_pos],
                *negatives[b * self.n_neg : (b + 1) * self.n_neg],
            ]
            yield [int(i) for i in rng.permutation(batch)]


# --- evaluation --------------------------------------------------------------------------------


def retrieval_data(
    tasks: pd.DataFrame, task: str, split: str
) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """queries {id: text}, corpus {id: item} (the task's candidates) and relevant {query id: item ids}."""
    rows = tasks[(tasks["task"] == task) & (tasks["split"] == split)]
    items = sorted({c for cs in tasks.loc[tasks["task"] == task, "candidates"] for c in cs})
    corpus = {f"{task}-item-{i:04d}": item for i, item in enumerate(items)}
    item_id = {item: cid for cid, item in corpus.items()}
    queries = dict(zip(rows["query_id"], rows["query"], strict=True))
    relevant = {q: {item_id[i] for i in r} for q, r in zip(rows["query_id"], rows["relevant"], strict=True)}
    return queries, corpus, relevant


def ranking_metrics(scores: dict[str, dict[str, float]], relevant: dict[str, set[str]]) -> dict[str, float]:
    """HIT@1, MAP@100 and NDCG@10 of per-query item scores, as InformationRetrievalEvaluator computes them."""
    hit, ap, ndcg = [], [], []
    for query, item_scores in scores.items():
        ranked = sorted(item_scores, key=lambda cid: (-item_scores[cid], cid))
        gold = relevant[query]
        hits = [cid in gold for cid in ranked]
        hit.append(float(hits[0]))
        found, precision_sum = 0, 0.0
        for rank, is_hit in enumerate(hits[:100]):
            if is_hit:
                found += 1
                precision_sum += found / (rank + 1)
        ap.append(precision_sum / min(100, len(gold)))
        dcg = sum(1 / math.log2(i + 2) for i, is_hit in enumerate(hits[:10]) if is_hit)
        ndcg.append(dcg / sum(1 / math.log2(i + 2) for i in range(min(len(gold), 10))))
    return {"hit@1": float(np.mean(hit)), "map@100": float(np.mean(ap)), "ndcg@10": float(np.mean(ndcg))}


def ir_evaluator(tasks: pd.DataFrame, task: str, split: str, batch_size: int = 64) -> Any:
    """sentence-transformers' InformationRetrievalEvaluator for one task's `split` queries (cosine),
    computing HIT@1, MAP@100 and NDCG@10 (its primary metric), or None where the split has none."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    queries, corpus, relevant = retrieval_data(tasks, task, split)
    if not queries:
        return None
    return InformationRetrievalEvaluator(
        queries,
        corpus,
        relevant,
        name=task,
        accuracy_at_k=[1],
        precision_recall_at_k=[1],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[100],
        batch_size=batch_size,
        write_csv=False,
        show_progress_bar=False,
    )


def validation_evaluator(tasks: pd.DataFrame, batch_size: int = 64) -> Any:
    """What chooses the checkpoint: the per-task evaluators on the validation split in a
    SequentialEvaluator whose score (`sequential_score`) is their macro NDCG@10. It is given only the
    validation queries, so it cannot read the test split."""
    from sentence_transformers.sentence_transformer.evaluation import SequentialEvaluator

    validation = tasks[tasks["split"] == "validation"]
    evaluators = [
        ir_evaluator(validation, t, "validation", batch_size) for t in sorted(validation["task"].unique())
    ]
    return SequentialEvaluator(evaluators, main_score_function=lambda scores: float(np.mean(scores)))


def embedder_metrics(model: Any, tasks: pd.DataFrame, split: str, batch_size: int = 64) -> dict[str, dict]:
    """Per task, sentence-transformers' InformationRetrievalEvaluator on `split` (cosine similarity)."""
    results = {}
    for task in sorted(tasks["task"].unique()):
        evaluator = ir_evaluator(tasks, task, split, batch_size)
        if evaluator is None:
            continue
        scores = evaluator(model)
        results[task] = {
            ours: round(float(scores[f"{task}_cosine_{theirs}"]), 4) for ours, theirs in METRICS.items()
        } | {"queries": len(evaluator.queries)}
    return results


def bm25_metrics(tasks: pd.DataFrame, split: str) -> dict[str, dict]:
    """Per task, BM25 (bm25s, Lucene scoring) over the task's items, scored by `ranking_metrics`."""
    import bm25s

    results = {}
    for task in sorted(tasks["task"].unique()):
        queries, corpus, relevant = retrieval_data(tasks, task, split)
        if not queries:
            continue
        ids = list(corpus)
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(list(corpus.values()), show_progress=False), show_progress=False)
        scores = {}
        for qid, text in queries.items():
            item_scores = retriever.get_scores(bm25s.tokenize(text, show_progress=False, return_ids=False)[0])
            scores[qid] = dict(zip(ids, map(float, item_scores), strict=True))
        results[task] = {k: round(v, 4) for k, v in ranking_metrics(scores, relevant).items()} | {
            "queries": len(queries)
        }
    return results


def macro_average(results: dict[str, dict]) -> dict[str, float]:
    return {m: round(float(np.mean([r[m] for r in results.values()])), 4) for m in METRICS}


def over_seeds(per_seed: list[dict[str, dict]], baseline: dict[str, dict] | None = None) -> dict[str, dict]:
    """Per task (and macro), each metric's mean over the seeds' results and the half-width of its 95%
    t-interval (`<metric>_ci95`); with `baseline` (a system without seeds), of the difference to it."""
    summary = {}
    for task in per_seed[0]:
        summary[task] = {}
        for metric in METRICS:
            values = np.array([r[task][metric] for r in per_seed]) - (
                baseline[task][metric] if baseline else 0
            )
            half = None  # one seed: no interval
            if len(values) > 1:
                half = round(
                    float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))), 4
                )
            summary[task] |= {metric: round(float(values.mean()), 4), f"{metric}_ci95": half}
        if "queries" in per_seed[0][task]:
            summary[task]["queries"] = per_seed[0][task]["queries"]
    return summary


def results_table(metrics: dict[str, dict], split: str, seeds: int) -> str:
    """Markdown: a row per task (and the macro average), a column per metric and system; a system with
    seeds shows mean ± the 95% interval's half-width over them."""
    systems = ("pretrained", "finetuned", "bm25")
    tasks = {t: r["queries"] for t, r in metrics["pretrained"].items() if t != "macro"}

    def cell(system: str, task: str, metric: str) -> str:
        row = metrics[system][task]
        ci = f" ± {row[f'{metric}_ci95']:.3f}" if row.get(f"{metric}_ci95") is not None else ""
        return f"{row[metric]:.3f}{ci}"

    lines = [f"# Embedder: {split} split, per task (fine-tuned: mean ± 95% interval over {seeds} seeds)", ""]
    lines.append("| task | queries | " + " | ".join(f"{m} {s}" for m in METRICS for s in systems) + " |")
    lines.append("|---" * (2 + len(METRICS) * len(systems)) + "|")
    for task, queries in [*sorted(tasks.items()), ("macro", sum(tasks.values()))]:
        cells = [cell(s, task, m) for m in METRICS for s in systems]
        lines.append(f"| {task} | {queries} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- training ----------------------------------------------------------------------------------


def train_embedder(
    base_model: str | Path,
    tasks: pd.DataFrame,
    out_dir: str | Path,
    params: dict[str, Any],
    report_to: list[str] | None = None,
) -> dict[str, Any]:
    """Fine-tune `base_model` on the train split with the loss in params (params.yaml train_embedder:
    `training` holds SentenceTransformerTrainingArguments fields, its `seed` included; `lora` peft
    LoraConfig fields); save it (sentence-transformers format; only the adapter with `lora`) to
    `out_dir`. With `training.eval_strategy` set, `validation_evaluator` scores the checkpoints and
    `load_best_model_at_end` keeps the best. `tasks` must not hold the test split. Returns the loss
    per step, the validation score per evaluation and the best one."""
    from datasets import Dataset, DatasetDict
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import losses

    if (tasks["split"] == "test").any():  # the test split is read once, by eval_embedder
        raise ValueError(
            "train_embedder: the tasks hold test-split queries; give it the train and validation splits"
        )
    training = params["training"]  # SentenceTransformerTrainingArguments fields
    torch.manual_seed(training["seed"])
    # A causal LM checkpoint (e.g. models/pretrained/student_instruct) loads with last-token pooling
    model = SentenceTransformer(
        str(require_model(base_model)), device="cuda" if torch.cuda.is_available() else "cpu"
    )
    if params.get("lora"):  # decoder embedders: train a LoRA adapter, the base stays frozen
        from peft import LoraConfig

        model.add_adapter(LoraConfig(**params["lora"], task_type="FEATURE_EXTRACTION"))
    negatives = params.get("negatives", "random")
    if negatives not in NEGATIVES:
        raise ValueError(f"train_embedder.negatives {negatives!r}: expected one of {NEGATIVES}")
    mined = None
    if negatives == "hard":  # mined with the model as it starts, before any training step
        mined = hard_negatives(tasks, model, params["negatives_per_query"], params["relative_margin"])
    by_task = params.get("per_task_batches", False)
    if by_task and params["loss"] == "contrastive":
        raise ValueError(
            "train_embedder.per_task_batches: for the in-batch losses (mnrl, cached_mnrl, gist); "
            "contrastive batches are made by pos_ratio"
        )
    # per_task_batches: one dataset per task, so that a batch never mixes tasks and its in-batch
    # negatives are items of the query's own task (training.multi_dataset_batch_sampler: how the
    # tasks' batches alternate); otherwise a batch's other items are mostly other tasks', easy to tell
    # apart from the positive
    groups = tasks.groupby("task", sort=True) if by_task else [("all", tasks)]
    pairs = {
        task: training_pairs(group, params["loss"], params["negatives_per_query"], training["seed"], mined)
        for task, group in groups
    }
    train_dataset = DatasetDict(
        {task: Dataset.from_pandas(p, preserve_index=False) for task, p in pairs.items()}
    )
    sampler = BatchSamplers.NO_DUPLICATES  # an in-batch negative must not be another positive
    if params["loss"] == "contrastive":
        loss = losses.ContrastiveLoss(model, margin=params["margin"])
        sampler = partial(BalancedBatchSampler, pos_ratio=params["pos_ratio"])
    elif params["loss"] == "mnrl":
        loss = losses.MultipleNegativesRankingLoss(model)
    elif params["loss"] == "cached_mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(
            model, mini_batch_size=params.get("mini_batch_size", 32)
        )
    else:  # gist: the pretrained model, frozen, guides which in-batch items count as negatives
        guide = SentenceTransformer(str(base_model), device=model.device)
        loss = losses.GISTEmbedLoss(model, guide=guide)
    evaluator = validation_evaluator(tasks) if training.get("eval_strategy", "no") != "no" else None
    # checkpoints exist only to choose among them; the chosen one is saved to out_dir
    with tempfile.TemporaryDirectory(prefix="embedder-checkpoints-") as checkpoints:
        args = SentenceTransformerTrainingArguments(
            **({"save_strategy": "no"} | training),
            output_dir=checkpoints,
            batch_sampler=sampler,
            logging_steps=1,
            report_to=report_to or [],
            use_cpu=not torch.cuda.is_available(),
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset if by_task else train_dataset["all"],
            loss=loss,
            evaluator=evaluator,
        )
        result = trainer.train()
    # The model card would state the wall-clock training time, so the same training would give
    # a different DVC hash each run; the runtime goes to metrics/train_embedder.json instead.
    model.model_card_data._training_start_time = None
    model.save_pretrained(str(out_dir))
    history = trainer.state.log_history
    best = trainer.state.best_model_checkpoint  # .../checkpoint-<step>; None without selection
    return {
        "pairs": sum(map(len, pairs.values())),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "steps": trainer.state.global_step,
        "best_step": int(best.rsplit("-", 1)[1]) if best else trainer.state.global_step,
        "validation_ndcg@10": round(trainer.state.best_metric, 4) if best else None,
        "train_loss": round(result.training_loss, 4),
        "runtime_s": round(result.metrics["train_runtime"], 1),
        "losses": [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h],
        "validation": [
            {"step": h["step"], "ndcg@10": round(h["eval_sequential_score"], 4)}
            for h in history
            if "eval_sequential_score" in h
        ],
    }
