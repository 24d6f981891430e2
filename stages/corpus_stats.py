"""Stage corpus_stats: passages and tokens of every KD corpus, counted with each student's tokenizer.

python stages/corpus_stats.py <kd_dir> <models_dir> <metrics.json> <plot.json>
"""

import json
import sys
from pathlib import Path

import pandas as pd
from transformers import AutoTokenizer

from alia.corpora import corpus_texts, token_counts
from alia.params import load_params

kd_dir, models_dir, metrics_file, plot_file = map(Path, sys.argv[1:5])
params = load_params("corpus_stats")

corpora = {
    "base": pd.read_parquet(kd_dir / "base.parquet"),
    "rephrase": pd.concat([pd.read_parquet(p) for p in sorted((kd_dir / "rephrase").glob("*.parquet"))]),
    "qa": pd.read_parquet(kd_dir / "qa.parquet"),
    "qa_raft": pd.read_parquet(kd_dir / "qa_raft.parquet"),
    "extend": pd.read_parquet(kd_dir / "extend.parquet"),
}
tokenizers = {student: AutoTokenizer.from_pretrained(models_dir / student) for student in params["students"]}

stats, plot_rows = {}, []
for name, corpus in corpora.items():
    texts = corpus_texts(name, corpus)
    stats[name] = {"passages": len(texts)}
    for student, tokenizer in tokenizers.items():
        tokens = token_counts(tokenizer, texts)
        stats[name][f"tokens_{student}"] = tokens
        plot_rows.append({"corpus": name, "student": student, "tokens": tokens})

metrics_file.write_text(json.dumps(stats, indent=2) + "\n")
plot_file.parent.mkdir(parents=True, exist_ok=True)
plot_file.write_text(json.dumps(plot_rows, indent=2) + "\n")
print(json.dumps(stats))
