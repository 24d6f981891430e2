"""The embedder's retrieval metrics, next to the pretrained model and BM25.

Metrics are sentence-transformers' InformationRetrievalEvaluator's (accuracy@1 = HIT@1, MAP@100,
NDCG@10, binary relevance, ties broken by item id); `ranking_metrics` computes the same numbers from
any ranking, so that BM25 is scored exactly as the embedders are; over seeds, the mean and its
t-interval.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

RETRIEVAL_METRICS = {
    "hit@1": "accuracy@1",
    "map@100": "map@100",
    "ndcg@10": "ndcg@10",
}  # ours -> the evaluator's key


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
            ours: round(float(scores[f"{task}_cosine_{theirs}"]), 4)
            for ours, theirs in RETRIEVAL_METRICS.items()
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
    return {m: round(float(np.mean([r[m] for r in results.values()])), 4) for m in RETRIEVAL_METRICS}


def over_seeds(per_seed: list[dict[str, dict]], baseline: dict[str, dict] | None = None) -> dict[str, dict]:
    """Per task (and macro), each metric's mean over the seeds' results and the half-width of its 95%
    t-interval (`<metric>_ci95`); with `baseline` (a system without seeds), of the difference to it."""
    summary = {}
    for task in per_seed[0]:
        summary[task] = {}
        for metric in RETRIEVAL_METRICS:
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
    lines.append(
        "| task | queries | " + " | ".join(f"{m} {s}" for m in RETRIEVAL_METRICS for s in systems) + " |"
    )
    lines.append("|---" * (2 + len(RETRIEVAL_METRICS) * len(systems)) + "|")
    for task, queries in [*sorted(tasks.items()), ("macro", sum(tasks.values()))]:
        cells = [cell(s, task, m) for m in RETRIEVAL_METRICS for s in systems]
        lines.append(f"| {task} | {queries} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
