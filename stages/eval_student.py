"""Stage eval_student@<model>: a student (untuned, or with its LoRA adapter) on every question set.

python stages/eval_student.py <name> <model_dir> <eval_dir> <metrics.json> <breakdown.json>
    <predictions.parquet>

The headline metrics (what `dvc exp show` lists) and the per asset, direction and form breakdown are
separate files, so that experiment tables stay readable.
"""

import sys
from pathlib import Path

import pandas as pd

from alia.params import load_params
from alia.scoring import evaluate_model
from alia.tracking import finish_stage, start_run, write_json

name = sys.argv[1]
model_dir, eval_dir, metrics_file, breakdown_file, predictions_file = map(Path, sys.argv[2:7])
params = load_params("eval_student")
question_sets = {path.stem: pd.read_parquet(path) for path in sorted(eval_dir.glob("*.parquet"))}

with start_run(
    "eval_student",
    {k: v for k, v in params.items() if k != "models"} | {"model": str(model_dir)},
    variant=name,
):
    metrics, predictions = evaluate_model(str(model_dir), question_sets, params, desc=name)
    headline = {
        k: {m: v for m, v in s.items() if not m.startswith("by_")} if k in question_sets else s
        for k, s in metrics.items()
    }
    breakdown = {s: {m: v for m, v in metrics[s].items() if m.startswith("by_")} for s in question_sets}
    write_json(breakdown_file, breakdown)
    predictions_file.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(predictions_file, index=False)
    finish_stage("eval_student", headline, metrics_file)
