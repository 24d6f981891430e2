"""Stage extend: KD_Extend. Key entities of KD_Base documents extend the KG; entity-centric and
interaction-centric documents are written about the most frequent entities and pairs.

python stages/extend.py <kd_base> <kg_dir> <out.parquet> <entities.parquet> <kg_out_dir> <metrics.json>
"""

import sys
from pathlib import Path

import pandas as pd

from alia.corpora import add_key_entities, extend_items, filter_passages, key_entity_rows
from alia.generation import ask_rows, finish_stage, stage_teacher
from alia.kg import KnowledgeGraph
from alia.params import load_params
from alia.prompts import load_prompt
from alia.vocabulary import Canonicaliser

base_file, kg_dir, out_file, entities_file, kg_out_dir, metrics_file = sys.argv[1:7]
params = load_params("extend")

base = pd.read_parquet(base_file).head(params["documents"])
kg = KnowledgeGraph.read(kg_dir)
names = {kind: {kg.graph.nodes[n]["name"] for n in kg.nodes_of(kind)} for kind in ("sensor", "failure_mode")}
key_entities = load_prompt("key_entities")
items = pd.DataFrame(
    {"source_doc_id": base["doc_id"], "equipment_class": base["equipment_class"], "document": base["text"]}
)
with stage_teacher(params) as teacher:
    answers, parsed = ask_rows(teacher, key_entities, items, "key entities")
    entities = key_entity_rows(
        answers,
        parsed,
        Canonicaliser.from_yaml(params["vocabulary_rules"]),
        names["sensor"],
        names["failure_mode"],
    )
    todo = extend_items(entities, params["entities_per_class"], params["pairs_per_class"])
    written = [
        ask_rows(teacher, load_prompt(f"{kind}_document"), todo[todo["kind"] == kind], f"{kind} documents")[0]
        for kind in ("entity", "interaction")
    ]
kd_extend, filtered = filter_passages(
    pd.concat(written, ignore_index=True), params["near_duplicate_threshold"]
)
new_edges = add_key_entities(kg, entities, key_entities)
kg.write(kg_out_dir)

Path(out_file).parent.mkdir(parents=True, exist_ok=True)
kd_extend.rename(columns={"asset": "equipment_class"}).to_parquet(out_file, index=False)
entities.to_parquet(entities_file, index=False)
metrics = {
    "documents_read": len(base),
    "entity_answers_ok": int(answers["ok"].sum()),
    "key_entities": len(entities),
    "by_kind": entities["kind"]
    .value_counts()
    .reindex(["entity", "sensor", "failure_mode"], fill_value=0)
    .to_dict(),
    "documents": len(kd_extend),
    "filtered": filtered,
    "kg_new_edges": new_edges,
    "kg": kg.counts(),
}
finish_stage("extend", params, teacher, metrics, metrics_file)
