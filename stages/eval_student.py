"""Stage eval_student@<variant>: a trained adapter on every question set (params.yaml `mcqa:`), and
the paired comparison with the untuned model it was trained from, on the same questions.

python stages/eval_student.py <variant> <adapter_dir> <eval_dir> <base_predictions.parquet>
    <metrics.json> <breakdown.json> <predictions.parquet>

The headline metrics (what `dvc exp show` lists) and the per asset, direction, form and option-count
breakdown are separate files, so that experiment tables stay readable.
"""

import sys
from pathlib import Path

from alia.core.io import read_parquet, write_json, write_parquet
from alia.core.params import load_params
from alia.core.precision import report, resolve_dtype
from alia.core.tracking import check_outputs, finish_stage, start_run
from alia.student.scoring import compare_with_base, evaluate_model

variant = sys.argv[1]
adapter_dir, eval_dir, untuned_predictions_file, metrics_file, breakdown_file, predictions_file = map(
    Path, sys.argv[2:8]
)
check_outputs(metrics_file, breakdown_file, predictions_file)  # an unwritable folder stops it now
params = load_params("mcqa")
params["dtype"] = resolve_dtype(params["dtype"])  # auto: by the hardware (alia.core.precision)
precision = report(f"eval_student@{variant}", dtype=params["dtype"])
config = load_params("train_student")["variants"][variant]
question_sets = {path.stem: read_parquet(path) for path in sorted(eval_dir.glob("*.parquet"))}

with start_run(
    "eval_student", params | {"precision": precision, "model": str(adapter_dir), **config}, variant=variant
):
    metrics, breakdown, predictions = evaluate_model(adapter_dir, question_sets, params, desc=variant)
    # a positive control was trained on D_eval itself: labelled, so that no table takes it for a result
    metrics = {"base": config["student"], "leak": bool(config.get("leak", False)), **metrics}
    metrics = compare_with_base(metrics, predictions, read_parquet(untuned_predictions_file), params)
    write_json(breakdown_file, breakdown)
    predictions_file.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(predictions, predictions_file)
    finish_stage("eval_student", metrics, metrics_file, inputs={eval_dir: "evaluation"})
