"""Stage rephrase@<style>: KD_Rephrase, KD_Base documents rewritten in one style.

python stages/rephrase.py <style> <kd_base.parquet> <out.parquet> <metrics.json>
"""

import sys
from pathlib import Path

import pandas as pd

from alia.corpora import filter_passages, rephrase_items
from alia.generation import ask_rows, finish_stage, stage_teacher
from alia.params import load_params
from alia.prompts import load_prompt

style, base_file, out_file, metrics_file = sys.argv[1:5]
params = load_params("rephrase") | {"cache": f"data/teacher_cache/rephrase_{style}.sqlite"}

items = rephrase_items(pd.read_parquet(base_file), style, params["documents"])
with stage_teacher(params) as teacher:
    rewritten, _ = ask_rows(teacher, load_prompt(f"rephrase_{style}"), items, f"rephrase {style}")
corpus, filtered = filter_passages(rewritten.drop(columns="document"), params["near_duplicate_threshold"])

Path(out_file).parent.mkdir(parents=True, exist_ok=True)
corpus.to_parquet(out_file, index=False)
finish_stage(
    f"rephrase_{style}", params, teacher, {"documents": len(corpus), "filtered": filtered}, metrics_file
)
