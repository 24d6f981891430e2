"""Stage build_eval: D_eval from the ISO 17359 tick matrix (single- and multi-correct), and the expert
questions, all in one schema.

python stages/build_eval.py <tables_dir> <out_dir> <metrics.json>
"""

import sys
from pathlib import Path

from alia.core.io import write_parquet
from alia.core.params import load_params
from alia.core.tracking import finish_stage
from alia.data.tables import read_tables
from alia.student.questions import build_multi_correct, build_questions, load_question_set, to_table

tables_dir, out_dir, metrics_file = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
params = load_params("build_eval")
tables = read_tables(tables_dir)
matrix = tables["fm_sensor_matrix"]
source_assets = tables["equipment_classes"]["equipment_class"].tolist()  # D_source: never asked about

sets = {
    "d_eval": build_questions(
        matrix, params["min_options"], params["max_options"], params["seed"], source_assets
    ),
    "d_eval_multi": build_multi_correct(
        matrix, params["multi_correct"], params["max_options"], params["seed"], source_assets
    ),
    "expert": load_question_set(params["expert_set"]),
}
metrics = {}
for name, questions in sets.items():
    write_parquet(to_table(questions), out_dir / f"{name}.parquet")
    metrics[name] = {
        "questions": len(questions),
        "assets": questions["asset_name"].nunique(),
        **{
            f"{column}.{value}": int(n)
            for column, values in (
                ("direction", questions["direction"]),
                ("form", questions["form"]),
                ("options", questions["options"].map(len)),
                ("correct", questions["correct"].map(sum)),
            )
            for value, n in sorted(values.value_counts().items())
        },
    }
finish_stage("build_eval", metrics, metrics_file, params)
