"""Stage relevance_check: can each discovered sensor detect each failure mode of its class? (yes/no + reason)

python stages/relevance_check.py <tables_dir> <discovery_dir> <out_dir> <cache.sqlite> <metrics.json>
"""

import sys
from pathlib import Path

from alia.core.io import read_parquet, write_parquet
from alia.core.params import load_params
from alia.core.tracking import check_outputs, finish_stage
from alia.data.tables import read_table
from alia.kd.phase1 import check_relevance, relevance_requests
from alia.llm.prompts import load_prompt
from alia.llm.teacher import stage_teacher

tables_dir, discovery_dir, out_dir, cache, metrics_file = map(Path, sys.argv[1:6])
check_outputs(out_dir, cache, metrics_file)  # an unwritable folder stops it now
params = load_params("relevance_check")

requests = relevance_requests(
    read_table("class_failure_modes", tables_dir),
    read_parquet(discovery_dir / "sensors.parquet"),
    params["failure_modes_per_class"],
    params["sensors_per_class"],
)
with stage_teacher(params.get("teacher"), cache) as teacher:
    relevance = check_relevance(teacher, load_prompt("relevance_check"), requests)

write_parquet(relevance, out_dir / "relevance.parquet")
metrics = {
    "triplets": len(relevance),
    "answers_ok": int(relevance["ok"].sum()),
    "relevant": int(relevance["relevant"].fillna(False).sum()),
    "not_relevant": int((~relevance["relevant"].fillna(True)).sum()),
}
finish_stage("relevance_check", metrics, metrics_file, params, teacher=teacher)
