"""Stage train_embedder: contrastive fine-tuning of the embedder on the train split of the tasks.

python stages/train_embedder.py <pretrained_dir> <tasks.parquet> <out_dir> <metrics.json> <plot.json>
"""

import sys
from pathlib import Path

import pandas as pd

from alia.embedder import train_embedder
from alia.params import load_params
from alia.tracking import finish_stage, start_run

pretrained_dir, tasks_file, out_dir, metrics_file, plot_file = map(Path, sys.argv[1:6])
params = load_params("train_embedder")
tasks = pd.read_parquet(tasks_file)

# under their section's name: the Trainer's MLflow callback logs its own learning_rate, seed, ...
with start_run("train_embedder", {"train_embedder": params}):
    result = train_embedder(pretrained_dir, tasks, out_dir, params, report_to=["mlflow"])
    metrics = {k: v for k, v in result.items() if k != "losses"}
    finish_stage("train_embedder", metrics, metrics_file, plots={plot_file: result["losses"]})
