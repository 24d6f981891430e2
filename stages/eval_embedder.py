"""Stage eval_embedder: per task HIT@1, MAP@100 and NDCG@10 on the test split for the base embedder,
the fine-tuned one and BM25, as JSON metrics, a Markdown table and a DVC plot.

python stages/eval_embedder.py <tasks.parquet> <finetuned_dir> <metrics.json> <table.md> <plot.json>
"""

import json
import sys
from pathlib import Path

import mlflow
import pandas as pd
from sentence_transformers import SentenceTransformer

from alia.embedder import METRICS, bm25_metrics, embedder_metrics, macro_average, results_table
from alia.params import load_params
from alia.tracking import start_run

tasks_file, finetuned_dir, metrics_file, table_file, plot_file = map(Path, sys.argv[1:6])
params = load_params("eval_embedder")
tasks = pd.read_parquet(tasks_file)
base_model = load_params("train_embedder")["base_model"]

results = {
    "base": embedder_metrics(SentenceTransformer(base_model), tasks, params["split"], params["batch_size"]),
    "finetuned": embedder_metrics(
        SentenceTransformer(str(finetuned_dir)), tasks, params["split"], params["batch_size"]
    ),
    "bm25": bm25_metrics(tasks, params["split"]),
}
metrics = {system: {"macro": macro_average(by_task), **by_task} for system, by_task in results.items()}

table_file.write_text(results_table(metrics, params["split"]))
plot_rows = [
    {"task": f"{task} {system}", "ndcg@10": metrics[system][task]["ndcg@10"]}
    for system in results
    for task in metrics[system]
]
for path, content in ((metrics_file, metrics), (plot_file, plot_rows)):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")

with start_run("eval_embedder", params):
    mlflow.log_metrics(
        # MLflow names allow no "@": hit@1 is logged as hit_at_1
        {
            f"{s}.{t}.{m.replace('@', '_at_')}": v[m]
            for s, by in metrics.items()
            for t, v in by.items()
            for m in METRICS
        }
    )
print(table_file.read_text())
