"""The students' data at paper scale: tokenising and packing each KD corpus as train_student does
(TRL's SFTTrainer preparing its dataset; no training step), and building the embedder's training
pairs, each in its own process: tokens/s and peak RSS, on the whole corpus and on a tenth of it.

    python benchmarks/student_data.py CORPORA_DIR [--variants kd_extend kd_rephrase kd_qa]

CORPORA_DIR is a data/corpora folder, e.g. the one benchmarks/paper_scale.py leaves in its workdir
(scale-1/data/corpora). The variants, formats and SFT settings are params.yaml's train_student.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def prepare(corpus: Path, variant: str, fraction: float) -> dict:
    """In this process: the examples of `variant`'s corpus (its first `fraction`), tokenised and packed."""
    import pyarrow.compute as pc

    from alia.kd.corpora import read_corpus
    from alia.student.training import sft_trainer, training_examples

    params = yaml.safe_load((REPO / "params.yaml").read_text())["train_student"]
    config = params["variants"][variant]
    frame = read_corpus(corpus / config["corpus"])
    frame = frame.head(round(len(frame) * fraction))
    start = time.perf_counter()
    examples, counts = training_examples(frame, config["format"], params["replay_fraction"], None, 0)
    # train_student's own trainer, built and never trained
    trainer = sft_trainer(
        REPO / "models/pretrained" / config["student"], examples, config["format"],
        tempfile.mkdtemp(prefix="alia-student-data-"), params["lora"], params["sft"], params["dtype"],
    )  # fmt: skip
    seconds = time.perf_counter() - start
    data = trainer.train_dataset
    # counted in Arrow: the column as Python lists would cost more memory than the preparation
    tokens = pc.sum(pc.list_value_length(data.data.column("input_ids"))).as_py()
    return {
        "variant": variant, "fraction": fraction, "documents": len(frame), **counts,
        "rows": len(data), "tokens": tokens, "seconds": round(seconds, 1),
        "tokens_per_s": round(tokens / seconds), "peak_rss_mb": peak_rss_mb(),
    }  # fmt: skip


def pairs(fraction: float) -> dict:
    """In this process: the embedder's training pairs from the default task table (data/embed)."""
    import pandas as pd

    from alia.embedder.training import training_pairs

    params = yaml.safe_load((REPO / "params.yaml").read_text())["train_embedder"]
    tasks = pd.read_parquet(REPO / "data/embed/tasks.parquet")
    start = time.perf_counter()
    built = training_pairs(tasks, params["loss"], params["negatives_per_query"], 0)
    return {"variant": "embedder pairs", "fraction": fraction, "rows": len(built),
            "seconds": round(time.perf_counter() - start, 2),
            "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpora", type=Path)
    parser.add_argument("--variants", nargs="+", default=["kd_extend", "kd_rephrase", "kd_qa"])
    parser.add_argument("--one", nargs=2, metavar=("VARIANT", "FRACTION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # the child process
        variant, fraction = args.one[0], float(args.one[1])
        result = pairs(fraction) if variant == "embedder" else prepare(args.corpora, variant, fraction)
        print(json.dumps(result))
        return
    header = ["variant", "fraction", "documents", "rows", "tokens", "seconds", "tokens_per_s", "peak_rss_mb"]
    print("".join(f"{h:>16}" for h in header))
    for variant in [*args.variants, "embedder"]:
        for fraction in (0.1, 1.0):
            out = subprocess.run(
                [sys.executable, __file__, str(args.corpora), "--one", variant, str(fraction)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print("".join(f"{result.get(h, ''):>16}" for h in header), flush=True)


if __name__ == "__main__":
    main()
