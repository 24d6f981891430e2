"""Stage kd_base: KD_Base, documents about each class's sensors, failure modes and (sensor, failure
mode) pairs, written by the teacher from the Phase I facts.

python stages/kd_base.py <tables_dir> <discovery_dir> <relevance_dir> <vocabulary_rules.yaml> <out.parquet>
    <rejects.parquet> <cache.sqlite> <metrics.json>

Each document is checked against its facts (alia.kd.faithfulness) and filtered by `filters`.
"""

import sys
from pathlib import Path

from alia.core.io import read_parquet
from alia.core.params import load_params
from alia.core.tracking import check_outputs, finish_stage
from alia.data.tables import read_table
from alia.kd.corpora import PassageFilter, knowledge_requests, write_chunks
from alia.kd.judge import stage_checks
from alia.llm.ask import ask_rows_in_chunks
from alia.llm.prompts import load_prompt
from alia.llm.teacher import stage_teacher

tables_dir, discovery_dir, relevance_dir, rules_file = map(Path, sys.argv[1:5])
out_file, rejects_file, cache, metrics_file = map(Path, sys.argv[5:9])
check_outputs(out_file, rejects_file, cache, metrics_file)  # an unwritable folder stops it now
params = load_params("kd_base")

sensors = read_parquet(discovery_dir / "sensors.parquet")
requests = knowledge_requests(
    classes=list(dict.fromkeys(sensors["equipment_class"])),
    class_failure_modes=read_table("class_failure_modes", tables_dir),
    sensors=sensors,
    relevance=read_parquet(relevance_dir / "relevance.parquet"),
    failure_modes_per_class=params["failure_modes_per_class"],
    sensors_per_class=params["sensors_per_class"],
    facts_per_document=params["facts_per_document"],
)
keep = PassageFilter(params["near_duplicate_threshold"])
with (
    stage_teacher(params.get("teacher"), cache) as teacher,
    stage_checks(tables_dir, rules_file, relevance_dir, params["filters"], rejects_file, teacher) as facts,
):
    chunks = ask_rows_in_chunks(teacher, load_prompt("kd_base"), requests, "kd_base")
    write_chunks((facts(keep(documents)) for documents, _ in chunks), out_file)

metrics = {
    "documents": facts.counts["kept"],
    "by_relation": read_parquet(out_file, columns=["relation"])["relation"]
    .value_counts()
    .reindex(requests["relation"].unique(), fill_value=0)
    .to_dict(),
    "filtered": keep.counts,
    **facts.metrics(out_file),
}
finish_stage("kd_base", metrics, metrics_file, params, teacher=teacher, run_stats=facts.run_stats())
