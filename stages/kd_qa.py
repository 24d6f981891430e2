"""Stage kd_qa: KD_QA (question-answer records without context) and KD_QA-RAFT (the same questions
with generated summaries as context, in the RAFT manner), from KD_Base documents.

python stages/kd_qa.py <kd_base.parquet> <tables_dir> <relevance_dir> <vocabulary_rules.yaml> <kd_qa.parquet>
    <kd_qa_raft.parquet> <rejects.parquet> <cache.sqlite> <metrics.json>

Each record is checked against its KD_Base document's facts (alia.kd.faithfulness) and filtered by
`filters` before its RAFT copy is made.
"""

import sys
from pathlib import Path

from alia.core.io import read_parquet, write_parquet
from alia.core.params import load_params
from alia.core.tracking import check_outputs, finish_stage
from alia.kd.corpora import filter_passages, qa_records, qa_requests, raft_records
from alia.kd.judge import stage_checks
from alia.llm.ask import ask_rows
from alia.llm.prompts import load_prompt
from alia.llm.teacher import stage_teacher

kd_base_file, tables_dir, relevance_dir, rules_file = map(Path, sys.argv[1:5])
qa_file, raft_file, rejects_file, cache, metrics_file = map(Path, sys.argv[5:10])
check_outputs(qa_file, raft_file, rejects_file, cache, metrics_file)  # an unwritable folder stops it now
params = load_params("kd_qa")

requests = qa_requests(read_parquet(kd_base_file), params["documents"], params["min_pairs"])
with (
    stage_teacher(params.get("teacher"), cache) as teacher,
    stage_checks(tables_dir, rules_file, relevance_dir, params["filters"], rejects_file, teacher) as facts,
):
    answers, parsed = ask_rows(teacher, load_prompt("kd_qa"), requests, "kd_qa")
    answers["parsed"] = parsed
    kept, filtered = filter_passages(answers)  # failed (never valid JSON), truncated, duplicate answers
    qa, summaries, qa_counts = qa_records(kept.drop(columns="parsed"), kept["parsed"].tolist())
    qa = facts(qa)
raft = raft_records(qa, summaries, **params["raft"])

qa_file.parent.mkdir(parents=True, exist_ok=True)
write_parquet(qa, qa_file)
write_parquet(raft, raft_file)
metrics = {
    "documents": len(requests),
    "qa_records": len(qa),
    "raft_records": len(raft),
    "raft_with_oracle": int(raft["oracle_in_context"].sum()),
    "filtered": filtered | qa_counts,
    **facts.metrics(qa_file),
}
finish_stage("kd_qa", metrics, metrics_file, params, teacher=teacher, run_stats=facts.run_stats())
