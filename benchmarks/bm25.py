"""BM25 two ways on the embedder's tasks: bm25s (sparse matrices, what eval_embedder uses) against
rank_bm25 (pure Python), same tokens, same queries (every split), each task over its own items.
Prints queries/s of each, the ratio, and the metric difference.

    python benchmarks/bm25.py [--tasks data/embed/tasks.parquet] [--repeat 5]
"""

import argparse
import time

import bm25s
import numpy as np
import pandas as pd
from rank_bm25 import BM25Okapi

from alia.embedder.evaluation import RETRIEVAL_METRICS, ranking_metrics, retrieval_data


def score_all(tasks: pd.DataFrame, engine: str, repeat: int) -> tuple[dict, float, int]:
    """Per task metrics, seconds spent scoring queries (best of `repeat`) and the number of queries."""
    metrics, seconds, n_queries = {}, 0.0, 0
    for task in sorted(tasks["task"].unique()):
        queries, corpus, relevant = {}, {}, {}
        for split in ("train", "validation", "test"):
            q, corpus, r = retrieval_data(tasks, task, split)
            queries |= q
            relevant |= r
        ids = list(corpus)
        doc_tokens = bm25s.tokenize(list(corpus.values()), return_ids=False, show_progress=False)
        query_tokens = bm25s.tokenize(list(queries.values()), return_ids=False, show_progress=False)
        if engine == "bm25s":
            index = bm25s.BM25(method="robertson")  # rank_bm25's BM25Okapi formula
            index.index(bm25s.tokenize(list(corpus.values()), show_progress=False), show_progress=False)
        else:
            index = BM25Okapi(doc_tokens)
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            scores = [index.get_scores(tokens) for tokens in query_tokens]
            best = min(best, time.perf_counter() - start)
        seconds += best
        n_queries += len(queries)
        by_query = {
            qid: dict(zip(ids, map(float, s), strict=True)) for qid, s in zip(queries, scores, strict=True)
        }
        metrics[task] = ranking_metrics(by_query, relevant)
    return metrics, seconds, n_queries


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="data/embed/tasks.parquet")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tasks = pd.read_parquet(args.tasks)

    fast, fast_s, n = score_all(tasks, "bm25s", args.repeat)
    slow, slow_s, _ = score_all(tasks, "rank_bm25", args.repeat)
    print(f"\n{n} queries over 9 tasks, best of {args.repeat}")
    print(f"{'':12}{'bm25s':>12}{'rank_bm25':>12}")
    print(f"{'queries/s':12}{n / fast_s:>12.0f}{n / slow_s:>12.0f}")
    print(f"speed ratio bm25s/rank_bm25: {slow_s / fast_s:.1f}x")
    for metric in RETRIEVAL_METRICS:
        a = np.mean([m[metric] for m in fast.values()])
        b = np.mean([m[metric] for m in slow.values()])
        worst = max(abs(fast[t][metric] - slow[t][metric]) for t in fast)
        print(f"macro {metric:8} bm25s {a:.4f}  rank_bm25 {b:.4f}  difference {a - b:+.4f}", end="")
        print(f" (largest per task {worst:.4f})")


if __name__ == "__main__":
    main()
