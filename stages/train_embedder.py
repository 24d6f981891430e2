"""Stage train_embedder: fine-tune the embedder once per seed on the train split, each keeping its best
checkpoint on the validation split; serve the seed with the best validation score.

python stages/train_embedder.py <pretrained_dir> <tasks.parquet> <out_dir> <seeds_dir> <metrics.json>
    <plot.json>
"""

import shutil
import sys
from pathlib import Path

import mlflow

from alia.cards import write_embedder_card
from alia.core.io import read_parquet
from alia.core.params import load_params
from alia.core.precision import report, resolve_bf16
from alia.core.tracking import check_outputs, finish_stage, start_run
from alia.embedder.training import train_embedder

pretrained_dir, tasks_file, out_dir, seeds_dir, metrics_file, plot_file = map(Path, sys.argv[1:7])
check_outputs(out_dir, seeds_dir, metrics_file, plot_file)  # an unwritable folder stops it now
params = load_params("train_embedder")
# `auto`: bf16 mixed precision where the hardware computes it natively, else float32 (alia.core.precision)
params["training"]["bf16"] = resolve_bf16(params["training"].get("bf16", False))
precision = report("train_embedder", bf16=params["training"]["bf16"])
tasks = read_parquet(tasks_file)
tasks = tasks[tasks["split"] != "test"]  # the test split is eval_embedder's, read once

results, run_stats = {}, {}
# under their section's name: the Trainer's MLflow callback logs its own learning_rate, seed, ...
with start_run("train_embedder", {"train_embedder": params, "precision": precision}):
    for seed in params["seeds"]:
        seed_params = params | {"training": params["training"] | {"seed": seed}}
        with mlflow.start_run(run_name=f"seed-{seed}", nested=True):
            results[seed] = train_embedder(
                pretrained_dir, tasks, seeds_dir / f"seed-{seed}", seed_params, report_to=["mlflow"]
            )
            run_stats[f"seed-{seed}"] = {"runtime_s": results[seed].pop("runtime_s")}
            write_embedder_card(
                seeds_dir / f"seed-{seed}", pretrained_dir, tasks_file, seed_params, results[seed]
            )
    served = max(results, key=lambda seed: results[seed]["validation_ndcg@10"] or 0.0)
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.copytree(seeds_dir / f"seed-{served}", out_dir)
    metrics = {
        "served_seed": served,
        **{
            f"seed-{seed}": {k: v for k, v in r.items() if k not in ("losses", "validation")}
            for seed, r in results.items()
        },
    }
    finish_stage(
        "train_embedder",
        metrics,
        metrics_file,
        plots={plot_file: results[served]["losses"]},
        run_stats=run_stats,
        inputs={tasks_file: "training"},
    )
