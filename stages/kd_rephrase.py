"""Stage kd_rephrase@<style>: KD_Rephrase, KD_Base documents rewritten in one style.

python stages/kd_rephrase.py <style> <kd_base.parquet> <tables_dir> <relevance_dir> <vocabulary_rules.yaml>
    <out.parquet> <rejects.parquet> <cache.sqlite> <metrics.json>

Each rewrite is checked against its KD_Base document's facts (alia.kd.faithfulness) and filtered by
`filters`.
"""

import sys
from pathlib import Path

from alia.core.io import read_parquet
from alia.core.params import load_params
from alia.core.tracking import check_outputs, finish_stage
from alia.kd.corpora import PassageFilter, rephrase_requests, write_chunks
from alia.kd.judge import stage_checks
from alia.llm.ask import ask_rows_in_chunks
from alia.llm.prompts import load_prompt
from alia.llm.teacher import stage_teacher

style = sys.argv[1]
kd_base_file, tables_dir, relevance_dir, rules_file = map(Path, sys.argv[2:6])
out_file, rejects_file, cache, metrics_file = map(Path, sys.argv[6:10])
check_outputs(out_file, rejects_file, cache, metrics_file)  # an unwritable folder stops it now
params = load_params("kd_rephrase")

requests = rephrase_requests(read_parquet(kd_base_file), style, params["documents"])
keep = PassageFilter(params["near_duplicate_threshold"])
with (
    stage_teacher(params.get("teacher"), cache) as teacher,
    stage_checks(tables_dir, rules_file, relevance_dir, params["filters"], rejects_file, teacher) as facts,
):
    chunks = ask_rows_in_chunks(
        teacher, load_prompt(f"kd_rephrase_{style}"), requests, f"kd_rephrase {style}"
    )
    write_chunks((facts(keep(rewritten.drop(columns="document"))) for rewritten, _ in chunks), out_file)

metrics = {"documents": facts.counts["kept"], "filtered": keep.counts, **facts.metrics(out_file)}
finish_stage(
    "kd_rephrase", metrics, metrics_file, params, teacher=teacher, run_stats=facts.run_stats(), variant=style
)
