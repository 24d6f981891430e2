"""Stage embed_tasks: the embedder's nine retrieval tasks, split by asset, with query augmentation.

python stages/embed_tasks.py <tables_dir> <taxonomy.yaml> <descriptions_dir> <reference_model_dir>
    <tasks.parquet> <descriptions.parquet> <cache.sqlite> <metrics.json>

Each description's length, perplexity under the reference model and groundedness
(alia.embedder.description_quality) are kept beside it; one that `filters` reject augments no query.
"""

import sys
from pathlib import Path

import pandas as pd

from alia.core.io import write_parquet
from alia.core.params import load_params
from alia.core.tracking import check_outputs, finish_stage
from alia.data.tables import read_table
from alia.embedder.description_quality import check_descriptions
from alia.embedder.description_quality import summary as description_summary
from alia.embedder.tasks import (
    add_instructions,
    assign_splits,
    augment,
    describe_entities,
    description_lookup,
    finish,
    load_taxonomy,
    task_rows,
    to_table,
)
from alia.llm.prompts import load_prompt
from alia.llm.teacher import stage_teacher

tables_dir, taxonomy_file, descriptions_dir, reference_model = map(Path, sys.argv[1:5])
tasks_file, entities_file, cache, metrics_file = map(Path, sys.argv[5:9])
check_outputs(tasks_file, entities_file, cache, metrics_file)  # an unwritable folder stops it now
params = load_params("embed_tasks")

rows = task_rows(read_table("fm_sensor_matrix", tables_dir), load_taxonomy(taxonomy_file))
rows = add_instructions(assign_splits(rows, tuple(params["split"]), params["seed"]), params["seed"])
with stage_teacher(params.get("teacher"), cache) as teacher:
    entities = describe_entities(rows, descriptions_dir, teacher, load_prompt("entity_description"))
entities = check_descriptions(entities, rows, reference_model, params["filters"])
descriptions = description_lookup(entities)
rows = finish(augment(rows, descriptions, params["augment_p"], params["seed"], params["eval_augment_p"]))

write_parquet(to_table(rows), tasks_file)
write_parquet(entities, entities_file)
counts = pd.crosstab(rows["task"], rows["split"])
metrics = {
    "queries": len(rows),
    "augmented": int(rows["augmented"].sum()),
    "descriptions": entities["source"].value_counts().to_dict(),
    "description_quality": description_summary(entities),
    **{f"{task}.{split}": int(n) for task, by in counts.iterrows() for split, n in by.items()},
}
finish_stage("embed_tasks", metrics, metrics_file, params, teacher=teacher)
