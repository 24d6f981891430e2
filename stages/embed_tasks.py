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
    description_key,
    finish,
    first_sentence,
    load_taxonomy,
    query_entities,
    seed_descriptions,
    task_rows,
    to_table,
)
from alia.generation import ask_rows, finish_stage, stage_teacher
from alia.params import load_params
from alia.prompts import load_prompt
from alia.tables import read_table

tables_dir, taxonomy_file, descriptions_dir, out_dir, metrics_file = map(Path, sys.argv[1:6])
params = load_params("embed_tasks")

rows = task_rows(read_table("fm_sensor_matrix", tables_dir), load_taxonomy(taxonomy_file))
rows = add_instructions(assign_splits(rows, tuple(params["split"]), params["seed"]), params["seed"])

# One sentence per entity: the shared descriptions where they have it, the teacher otherwise.
entities = query_entities(rows)
seeds = seed_descriptions(descriptions_dir)
entities["description"] = entities["entity"].map(lambda e: seeds.get(description_key(e), ""))
entities["source"] = entities["description"].map(lambda d: "shared" if d else "teacher")
missing = entities[entities["source"] == "teacher"]
with stage_teacher(params) as teacher:
    asked, texts = ask_rows(
        teacher, load_prompt("entity_description"), missing[["entity", "kind"]], "describe"
    )
entities.loc[missing.index, "description"] = [first_sentence(t) if t else "" for t in texts]
entities.loc[missing.index[[not t for t in texts]], "source"] = "none"  # the teacher failed: no augmentation
descriptions = dict(zip(entities["entity"], entities["description"], strict=True))
rows = finish(augment(rows, descriptions, params["augment_p"], params["seed"]))

out_dir.mkdir(parents=True, exist_ok=True)
pq.write_table(to_table(rows), out_dir / "tasks.parquet")
entities.merge(asked.drop(columns=["kind", "text"]), on="entity", how="left").to_parquet(
    out_dir / "descriptions.parquet", index=False
)
counts = pd.crosstab(rows["task"], rows["split"])
metrics = {
    "queries": len(rows),
    "augmented": int(rows["augmented"].sum()),
    "descriptions": entities["source"].value_counts().to_dict(),
    **{f"{task}.{split}": int(n) for task, by in counts.iterrows() for split, n in by.items()},
}
finish_stage("embed_tasks", params, teacher, metrics, str(metrics_file))
