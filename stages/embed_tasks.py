"""Stage embed_tasks: the embedder's nine retrieval tasks, split by asset, with query augmentation.

python stages/embed_tasks.py <tables_dir> <taxonomy.yaml> <descriptions_dir> <out_dir> <metrics.json>
"""

import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from alia.embed_tasks import (
    add_instructions,
    assign_splits,
    augment,
    describe_entities,
    finish,
    load_taxonomy,
    task_rows,
    to_table,
)
from alia.generation import finish_stage, stage_teacher
from alia.params import load_params
from alia.tables import read_table

tables_dir, taxonomy_file, descriptions_dir, out_dir, metrics_file = map(Path, sys.argv[1:6])
params = load_params("embed_tasks")

rows = task_rows(read_table("fm_sensor_matrix", tables_dir), load_taxonomy(taxonomy_file))
rows = add_instructions(assign_splits(rows, tuple(params["split"]), params["seed"]), params["seed"])
with stage_teacher(params) as teacher:
    entities = describe_entities(rows, descriptions_dir, teacher)
descriptions = dict(zip(entities["entity"], entities["description"], strict=True))
rows = finish(augment(rows, descriptions, params["augment_p"], params["seed"]))

out_dir.mkdir(parents=True, exist_ok=True)
pq.write_table(to_table(rows), out_dir / "tasks.parquet")
entities.to_parquet(out_dir / "descriptions.parquet", index=False)
counts = pd.crosstab(rows["task"], rows["split"])
metrics = {
    "queries": len(rows),
    "augmented": int(rows["augmented"].sum()),
    "descriptions": entities["source"].value_counts().to_dict(),
    **{f"{task}.{split}": int(n) for task, by in counts.iterrows() for split, n in by.items()},
}
finish_stage("embed_tasks", params, teacher, metrics, str(metrics_file))
