"""Stage relevance_check: can each discovered sensor detect each failure mode of its class? (yes/no + reason)

python stages/relevance_check.py <tables_dir> <discovery_dir> <kg_dir> <out_dir> <kg_out_dir> <metrics.json>
"""

import sys
from pathlib import Path

import pandas as pd

from alia.generation import finish_stage, stage_teacher
from alia.kg import KnowledgeGraph
from alia.params import load_params
from alia.phase1 import add_relevance, check_relevance, relevance_items
from alia.prompts import load_prompt
from alia.tables import read_table

tables_dir, discovery_dir, kg_dir, out_dir, kg_out_dir, metrics_file = sys.argv[1:7]
params = load_params("relevance_check")

items = relevance_items(
    read_table("class_failure_modes", tables_dir),
    pd.read_parquet(Path(discovery_dir) / "sensors.parquet"),
    params["failure_modes_per_class"],
    params["sensors_per_class"],
)
prompt = load_prompt("relevance_check")
with stage_teacher(params) as teacher:
    relevance = check_relevance(teacher, prompt, items)
kg = KnowledgeGraph.read(kg_dir)
new_edges = add_relevance(kg, relevance, prompt)
kg.write(kg_out_dir)

Path(out_dir).mkdir(parents=True, exist_ok=True)
relevance.to_parquet(Path(out_dir) / "relevance.parquet", index=False)
metrics = {
    "triplets": len(relevance),
    "answers_ok": int(relevance["ok"].sum()),
    "relevant": int(relevance["relevant"].fillna(False).sum()),
    "not_relevant": int((~relevance["relevant"].fillna(True)).sum()),
    "kg_new_edges": new_edges,
}
finish_stage("relevance_check", params, teacher, metrics, metrics_file)
