"""Stage controls: the positive-control corpora, written by a template from the D_eval tick matrix
(a deliberate leak: alia.student.controls).

python stages/controls.py <tables_dir> <control_text.parquet> <control_qa.parquet> <metrics.json>
"""

import sys
from pathlib import Path

from alia.core.io import write_parquet
from alia.core.tracking import finish_stage
from alia.data.tables import read_tables
from alia.student.controls import control_qa, control_text

tables_dir, text_file, qa_file, metrics_file = map(Path, sys.argv[1:5])
matrix = read_tables(tables_dir)["fm_sensor_matrix"]
corpora = {text_file: control_text(matrix), qa_file: control_qa(matrix)}
for path, corpus in corpora.items():
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(corpus, path)
finish_stage(
    "controls",
    {path.stem: {"documents": len(corpus), "leak": True} for path, corpus in corpora.items()},
    metrics_file,
)
