"""Stage train_embedder: contrastive fine-tuning of the embedder on the train split of the tasks.

python stages/train_embedder.py <tasks.parquet> <out_dir> <metrics.json> <plot.json>
"""

import json
import sys
from pathlib import Path

import mlflow
import pandas as pd

from alia.embedder import train_embedder
from alia.params import load_params
from alia.tracking import start_run

tasks_file, out_dir, metrics_file, plot_file = map(Path, sys.argv[1:5])
params = load_params("train_embedder")
tasks = pd.read_parquet(tasks_file)

# under their section's name: the Trainer's MLflow callback logs its own learning_rate, seed, ...
with start_run("train_embedder", {"train_embedder": params}):
    result = train_embedder(params["base_model"], tasks, out_dir, params, report_to=["mlflow"])
    mlflow.log_metrics({k: v for k, v in result.items() if isinstance(v, int | float)})
metrics = {k: v for k, v in result.items() if k != "losses"}
for path, content in ((metrics_file, metrics), (plot_file, result["losses"])):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")
print(json.dumps(metrics))
