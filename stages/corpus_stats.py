"""Stage corpus_stats: passages and tokens of every KD corpus, counted with each student's tokenizer.

python stages/corpus_stats.py <metrics.json> <plot.json> --tokenizers <model_dir>... --corpora <corpus>...

A corpus is named by its file or folder (data/corpora/kd_qa.parquet: kd_qa), a tokenizer by its folder.
"""

import argparse
from pathlib import Path

from transformers import AutoTokenizer

from alia.corpora import corpus_texts, read_corpus, token_counts
from alia.tracking import finish_stage

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
    texts = corpus_texts(name, read_corpus(path))
    stats[name] = {"passages": len(texts)}
    for student, tokenizer in tokenizers.items():
        tokens = token_counts(tokenizer, texts)
        stats[name][f"tokens_{student}"] = tokens
        plot_rows.append({"corpus": name, "student": student, "tokens": tokens})
finish_stage("corpus_stats", stats, args.metrics_file, plots={args.plot_file: plot_rows})
