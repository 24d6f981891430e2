"""Stage eval_pretrained@<model>: an untuned student on every question set (params.yaml `mcqa:`),
the base that every adapter trained from it is compared with.

python stages/eval_pretrained.py <name> <model_dir> <eval_dir> <metrics.json> <breakdown.json>
    <predictions.parquet>
"""

import sys
from pathlib import Path

from alia.core.io import read_parquet, write_json, write_parquet
from alia.core.params import load_params
from alia.core.precision import report, resolve_dtype
from alia.core.tracking import check_outputs, finish_stage, start_run
from alia.student.scoring import evaluate_model

name = sys.argv[1]
model_dir, eval_dir, metrics_file, breakdown_file, predictions_file = map(Path, sys.argv[2:7])
check_outputs(metrics_file, breakdown_file, predictions_file)  # an unwritable folder stops it now
params = load_params("mcqa")
params["dtype"] = resolve_dtype(params["dtype"])  # auto: by the hardware (alia.core.precision)
precision = report(f"eval_pretrained@{name}", dtype=params["dtype"])
question_sets = {path.stem: read_parquet(path) for path in sorted(eval_dir.glob("*.parquet"))}

with start_run("eval_pretrained", params | {"precision": precision, "model": str(model_dir)}, variant=name):
    metrics, breakdown, predictions = evaluate_model(model_dir, question_sets, params, desc=name)
    write_json(breakdown_file, breakdown)
    predictions_file.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(predictions, predictions_file)
    finish_stage("eval_pretrained", metrics, metrics_file, inputs={eval_dir: "evaluation"})
