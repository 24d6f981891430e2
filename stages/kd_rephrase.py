"""Stage kd_rephrase@<style>: KD_Rephrase, KD_Base documents rewritten in one style.

python stages/kd_rephrase.py <style> <kd_base.parquet> <out.parquet> <cache.sqlite> <metrics.json>
"""

import sys
from pathlib import Path

from alia.core.io import read_parquet
from alia.core.params import load_params
from alia.core.tracking import check_outputs, finish_stage
from alia.kd.corpora import PassageFilter, rephrase_requests, write_chunks
from alia.llm.ask import ask_rows_in_chunks
from alia.llm.prompts import load_prompt
from alia.llm.teacher import stage_teacher

style = sys.argv[1]
kd_base_file, out_file, cache, metrics_file = map(Path, sys.argv[2:6])
check_outputs(out_file, cache, metrics_file)  # an unwritable folder stops it now
params = load_params("kd_rephrase")

requests = rephrase_requests(read_parquet(kd_base_file), style, params["documents"])
keep = PassageFilter(params["near_duplicate_threshold"])
with stage_teacher(params.get("teacher"), cache) as teacher:
    chunks = ask_rows_in_chunks(
        teacher, load_prompt(f"kd_rephrase_{style}"), requests, f"kd_rephrase {style}"
    )
    write_chunks((keep(rewritten.drop(columns="document")) for rewritten, _ in chunks), out_file)

metrics = {"documents": keep.counts["kept"], "filtered": keep.counts}
finish_stage("kd_rephrase", metrics, metrics_file, params, teacher=teacher, variant=style)
