"""Stage kd_extend: KD_Extend. Key entities of KD_Base documents (a facts table the kg stage links
into the graph); entity-centric and interaction-centric documents about the most frequent entities
and pairs.

python stages/kd_extend.py <tables_dir> <discovery_dir> <relevance_dir> <kd_base.parquet>
    <vocabulary_rules.yaml> <out.parquet> <rejects.parquet> <key_entities.parquet> <cache.sqlite>
    <metrics.json>

Each document is checked against the entities it was written about (alia.kd.faithfulness) and
filtered by `filters`.
"""

import sys
from pathlib import Path

import pandas as pd

from alia.core.io import read_parquet, write_parquet
from alia.core.params import load_params
from alia.core.tracking import check_outputs, finish_stage
from alia.data import kg
from alia.data.tables import read_tables
from alia.data.vocabulary import Canonicaliser
from alia.kd.corpora import PassageFilter, extend_requests, key_entity_rows, write_chunks
from alia.kd.judge import stage_checks
from alia.llm.ask import ask_rows, ask_rows_in_chunks
from alia.llm.prompts import load_prompt
from alia.llm.teacher import stage_teacher

tables_dir, discovery_dir, relevance_dir, kd_base_file, rules_file = map(Path, sys.argv[1:6])
out_file, rejects_file, entities_file, cache, metrics_file = map(Path, sys.argv[6:11])
check_outputs(out_file, rejects_file, entities_file, cache, metrics_file)  # an unwritable folder stops it now
params = load_params("kd_extend")

# A key entity that names a sensor or failure mode of the graph as Phase I left it is that node
graph = kg.build(
    read_tables(tables_dir),
    read_parquet(discovery_dir / "sensors.parquet"),
    read_parquet(relevance_dir / "relevance.parquet"),
    None,
    {name: load_prompt(name) for name in ("sensor_discovery", "relevance_check")},
    load_params("kg")["include_eval_assets"],
)
names = {kind: graph.names_of(kind) for kind in ("sensor", "failure_mode")}

base = read_parquet(kd_base_file).head(params["documents"])
requests = pd.DataFrame(
    {"source_doc_id": base["doc_id"], "equipment_class": base["equipment_class"], "document": base["text"]}
)
with (
    stage_teacher(params.get("teacher"), cache) as teacher,
    stage_checks(tables_dir, rules_file, relevance_dir, params["filters"], rejects_file, teacher) as facts,
):
    answers, parsed = ask_rows(teacher, load_prompt("key_entities"), requests, "key entities")
    entities = key_entity_rows(
        answers, parsed, Canonicaliser.from_yaml(rules_file), names["sensor"], names["failure_mode"]
    )
    todo = extend_requests(entities, params["entities_per_class"], params["pairs_per_class"])
    # entity documents, then interaction documents, each chunk filtered and written as it comes
    keep = PassageFilter(params["near_duplicate_threshold"])
    chunks = (
        facts(keep(written))
        for kind, prompt in (("entity", "entity_document"), ("interaction", "interaction_document"))
        for written, _ in ask_rows_in_chunks(
            teacher, load_prompt(prompt), todo[todo["kind"] == kind], f"{kind} documents"
        )
    )
    write_chunks(chunks, out_file)

entities_file.parent.mkdir(parents=True, exist_ok=True)
write_parquet(entities, entities_file)
metrics = {
    "documents_read": len(base),
    "entity_answers_ok": int(answers["ok"].sum()),
    "key_entities": len(entities),
    "by_kind": entities["kind"]
    .value_counts()
    .reindex(["entity", "sensor", "failure_mode"], fill_value=0)
    .to_dict(),
    "documents": facts.counts["kept"],
    "filtered": keep.counts,
    **facts.metrics(out_file),
}
finish_stage("kd_extend", metrics, metrics_file, params, teacher=teacher, run_stats=facts.run_stats())
