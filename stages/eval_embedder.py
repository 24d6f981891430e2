"""Stage eval_embedder: per task HIT@1, MAP@100 and NDCG@10 on one split (the test split by default)
for the pretrained embedder, the fine-tuned one of every seed (mean and 95% interval over seeds, and
the same for its difference to the pretrained model and to BM25) and BM25, as JSON metrics, a
Markdown table and a DVC plot.

python stages/eval_embedder.py <pretrained_dir> <seeds_dir> <tasks.parquet> <metrics.json> <table.md>
    <plot.json>
"""

import sys
from pathlib import Path

from sentence_transformers import SentenceTransformer

from alia.core.io import read_parquet, write_text
from alia.core.models import require_model
from alia.core.params import load_params
from alia.core.tracking import check_outputs, finish_stage
from alia.embedder.evaluation import bm25_metrics, embedder_metrics, macro_average, over_seeds, results_table

pretrained_dir, seeds_dir, tasks_file, metrics_file, table_file, plot_file = map(Path, sys.argv[1:7])
check_outputs(metrics_file, table_file, plot_file)  # an unwritable folder stops it now
params = load_params("eval_embedder")
seeds = load_params("train_embedder")["seeds"]
tasks = read_parquet(tasks_file)
split, batch_size = params["split"], params["batch_size"]


def with_macro(by_task: dict[str, dict]) -> dict[str, dict]:
    return {"macro": macro_average(by_task), **by_task}


def scored(model_dir: Path) -> dict[str, dict]:
    return with_macro(
        embedder_metrics(SentenceTransformer(str(require_model(model_dir))), tasks, split, batch_size)
    )


pretrained, bm25 = scored(pretrained_dir), with_macro(bm25_metrics(tasks, split))
per_seed = [scored(seeds_dir / f"seed-{seed}") for seed in seeds]
metrics = {
    "split": split,
    "seeds": len(seeds),
    "pretrained": pretrained,
    "finetuned": over_seeds(per_seed),
    "bm25": bm25,
    "finetuned_minus_pretrained": over_seeds(per_seed, pretrained),
    "finetuned_minus_bm25": over_seeds(per_seed, bm25),
}

write_text(table_file, results_table(metrics, split, len(seeds)))
print(table_file.read_text())
plot_rows = [
    {"task": f"{task} {system}", "ndcg@10": metrics[system][task]["ndcg@10"]}
    for system in ("pretrained", "finetuned", "bm25")
    for task in metrics[system]
]
finish_stage(
    "eval_embedder",
    metrics,
    metrics_file,
    params,
    plots={plot_file: plot_rows},
    inputs={tasks_file: "evaluation"},
)
