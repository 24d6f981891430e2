"""Stage build_eval: D_eval from the ISO 17359 tick matrix, and the expert questions in the same schema.

python stages/build_eval.py <tables_dir> <out_dir> <metrics.json>
"""

import sys
from pathlib import Path

import pyarrow.parquet as pq

from alia.mcqa import build_questions, load_question_set, to_table
from alia.params import load_params
from alia.tables import read_tables
from alia.tracking import finish_stage

tables_dir, out_dir, metrics_file = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
params = load_params("build_eval")
tables = read_tables(tables_dir)

sets = {
    "d_eval": build_questions(
        tables["fm_sensor_matrix"],
        params["questions_per_cell"],
        params["min_options"],
        params["max_options"],
        params["seed"],
        source_assets=tables["equipment_classes"]["equipment_class"].tolist(),
    ),
    "expert": load_question_set(params["expert_set"]),
}
out_dir.mkdir(parents=True, exist_ok=True)
metrics = {}
for name, questions in sets.items():
    pq.write_table(to_table(questions), out_dir / f"{name}.parquet")
    metrics[name] = {
        "questions": len(questions),
        "options_mean": round(float(questions["options"].map(len).mean()), 2),
        **{
            f"{col}.{value}": int(n)
            for col in ("direction", "form")
            for value, n in questions[col].value_counts().items()
        },
    }
finish_stage("build_eval", metrics, metrics_file, params)
