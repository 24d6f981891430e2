"""Stage corpus_stats: passages and tokens of every KD corpus, counted with each student's tokenizer,
and how faithful its passages are to their facts (alia.kd.faithfulness.summary; per teacher too where
more than one wrote a corpus).

python stages/corpus_stats.py <metrics.json> <plot.json> --tokenizers <model_dir>... --corpora <corpus>...

A corpus is named by its file or folder (data/corpora/kd_qa.parquet: kd_qa), a tokenizer by its folder.
"""

import argparse
from pathlib import Path

import pandas as pd
from transformers import AutoTokenizer

from alia.core.tracking import finish_stage
from alia.kd.corpora import corpus_batches, corpus_texts, token_counts
from alia.kd.faithfulness import CHECK_COLUMNS, summary

parser = argparse.ArgumentParser()
parser.add_argument("metrics_file", type=Path)
parser.add_argument("plot_file", type=Path)
parser.add_argument("--tokenizers", type=Path, nargs="+", required=True)
parser.add_argument("--corpora", type=Path, nargs="+", required=True)
args = parser.parse_args()

tokenizers = {path.name: AutoTokenizer.from_pretrained(path) for path in args.tokenizers}
stats, plot_rows = {}, []
for path in args.corpora:
    name = path.name.removesuffix(".parquet")
    counts = dict.fromkeys(["passages", *(f"tokens_{student}" for student in tokenizers)], 0)
    checks = []
    for batch in corpus_batches(path):  # a paper-scale corpus is read a batch at a time
        texts = corpus_texts(batch)
        counts["passages"] += len(texts)
        for student, tokenizer in tokenizers.items():
            counts[f"tokens_{student}"] += token_counts(tokenizer, texts)
        checks.append(batch[["teacher_model", *CHECK_COLUMNS]])
    checks = pd.concat(checks, ignore_index=True)
    stats[name] = counts | summary(checks)
    if checks["teacher_model"].nunique() > 1:
        for teacher, written in checks.groupby("teacher_model"):
            stats[f"{name} by {teacher}"] = summary(written)
    plot_rows += [
        {"corpus": name, "student": student, "tokens": counts[f"tokens_{student}"]} for student in tokenizers
    ]
finish_stage("corpus_stats", stats, args.metrics_file, plots={args.plot_file: plot_rows})
