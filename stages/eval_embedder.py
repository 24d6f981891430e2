"""Stage eval_embedder: per task HIT@1, MAP@100 and NDCG@10 on the test split for the pretrained
embedder, the fine-tuned one and BM25, as JSON metrics, a Markdown table and a DVC plot.

python stages/eval_embedder.py <pretrained_dir> <finetuned_dir> <tasks.parquet> <metrics.json> <table.md>
    <plot.json>
"""

import sys
from pathlib import Path

import pandas as pd
from sentence_transformers import SentenceTransformer

from alia.embedder import bm25_metrics, embedder_metrics, macro_average, results_table
from alia.params import load_params
from alia.tracking import finish_stage

pretrained_dir, finetuned_dir, tasks_file, metrics_file, table_file, plot_file = map(Path, sys.argv[1:7])
params = load_params("eval_embedder")
tasks = pd.read_parquet(tasks_file)

split, batch_size = params["split"], params["batch_size"]
results = {
    "pretrained": embedder_metrics(SentenceTransformer(str(pretrained_dir)), tasks, split, batch_size),
    "finetuned": embedder_metrics(SentenceTransformer(str(finetuned_dir)), tasks, split, batch_size),
    "bm25": bm25_metrics(tasks, split),
}
metrics = {system: {"macro": macro_average(by_task), **by_task} for system, by_task in results.items()}

table_file.write_text(results_table(metrics, split))
print(table_file.read_text())
plot_rows = [
    {"task": f"{task} {system}", "ndcg@10": metrics[system][task]["ndcg@10"]}
    for system in results
    for task in metrics[system]
]
finish_stage("eval_embedder", metrics, metrics_file, params, plots={plot_file: plot_rows})
