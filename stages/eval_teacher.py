"""Stage eval_teacher: the teacher's own score, the ceiling of what it can distil. The teacher endpoint
(params.yaml `teacher:`, with `eval_teacher.teacher:`'s changes) answers the students' question
samples (params `mcqa:`) through the one client (alia.student.endpoint), and is compared with every
student scored, paired on the same questions.

python stages/eval_teacher.py <eval_dir> <student_predictions_dir> <cache.sqlite> <metrics.json>
    <breakdown.json> <predictions.parquet>
"""

import sys
from pathlib import Path

from alia.core.io import read_parquet, write_json, write_parquet
from alia.core.params import load_params
from alia.core.tracking import check_outputs, finish_stage, start_run
from alia.llm.teacher import stage_teacher
from alia.student.endpoint import compare_with_students, evaluate_endpoint

eval_dir, students_dir, cache, metrics_file, breakdown_file, predictions_file = map(Path, sys.argv[1:7])
check_outputs(cache, metrics_file, breakdown_file, predictions_file)  # an unwritable folder stops it now
params, mcqa = load_params("eval_teacher"), load_params("mcqa")
question_sets = {path.stem: read_parquet(path) for path in sorted(eval_dir.glob("*.parquet"))}
students = {path.stem: read_parquet(path) for path in sorted(students_dir.glob("*.parquet"))}

with start_run("eval_teacher", params), stage_teacher(params["teacher"], cache) as teacher:
    metrics, breakdown, predictions = evaluate_endpoint(teacher, question_sets, params, mcqa)
    metrics = compare_with_students(metrics, predictions, students, mcqa)
    write_json(breakdown_file, breakdown)
    write_parquet(predictions, predictions_file)
    finish_stage("eval_teacher", metrics, metrics_file, teacher=teacher, inputs={eval_dir: "evaluation"})
