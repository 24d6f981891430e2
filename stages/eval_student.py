"""Stage eval_student@<variant>: a student (untuned, or with its LoRA adapter) on every question set.

python stages/eval_student.py <variant> <eval_dir> <metrics_dir> <breakdown_dir> <predictions_dir>

The headline metrics (metrics_dir, what `dvc exp show` lists) and the per asset, direction and form
breakdown (breakdown_dir) are separate files, so that experiment tables stay readable.
"""

import json
import sys
from pathlib import Path

import mlflow
import pandas as pd

from alia.params import load_params
from alia.scoring import evaluate_model
from alia.tracking import start_run

variant = sys.argv[1]
eval_dir, metrics_dir, breakdown_dir, predictions_dir = map(Path, sys.argv[2:6])
params = load_params("eval_student")
model_path = params["models"][variant]
question_sets = {path.stem: pd.read_parquet(path) for path in sorted(eval_dir.glob("*.parquet"))}

with start_run(
    "eval_student",
    {k: v for k, v in params.items() if k != "models"} | {"model": model_path},
    variant=variant,
):
    metrics, predictions = evaluate_model(model_path, question_sets, params, desc=variant)
    mlflow.log_metrics(
        {f"{s}.{k}": v for s in question_sets for k, v in metrics[s].items() if isinstance(v, int | float)}
    )

headline = {
    k: {m: v for m, v in s.items() if not m.startswith("by_")} if k in question_sets else s
    for k, s in metrics.items()
}
breakdown = {s: {m: v for m, v in metrics[s].items() if m.startswith("by_")} for s in question_sets}
for directory in (metrics_dir, breakdown_dir, predictions_dir):
    directory.mkdir(parents=True, exist_ok=True)
(metrics_dir / f"{variant}.json").write_text(json.dumps(headline, indent=2) + "\n")
(breakdown_dir / f"{variant}.json").write_text(json.dumps(breakdown, indent=2) + "\n")
predictions.to_parquet(predictions_dir / f"{variant}.parquet", index=False)
print(
    json.dumps({s: {k: v for k, v in metrics[s].items() if not k.startswith("by_")} for s in question_sets})
)
