"""The GPU check: on a machine with a CUDA GPU, in under 8 minutes, the three paths a full-size run
leans on, each timed, beside this project's 2-core CPU (benchmarks/gpu_check_cpu.json, written by the
same script here with `--device cpu --write-reference`):

1. a student variant (LoRA on the 135M instruct student, the kd_extend corpus cycled) for `--steps`
   steps in bf16 where the device computes it: steps/s and tokens/s;
2. every D_eval question (2,667) scored in letter mode: questions/s;
3. the embedder trained one epoch on the train split's pairs (the default loss): pairs/s;

with the peak GPU memory of each. Run from a checkout after `make repro` (it reads the prepared models,
the corpora, the questions and the tasks):

    python benchmarks/gpu_check.py [--steps 300] [--out metrics/gpu_check.json]
    python benchmarks/gpu_check.py --device cpu --steps 10 --questions 100 --pairs 256 --write-reference
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from alia.core.params import load_params
from alia.core.precision import resolve_bf16, resolve_dtype
from alia.kd.corpora import read_corpus
from alia.student.engine import load_model
from alia.student.formats import prompt_style
from alia.student.scoring import score_questions
from alia.student.training import sft_trainer, training_examples

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "benchmarks" / "gpu_check_cpu.json"


def peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def reset(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def student(device: str, steps: int, work: Path) -> dict:
    """The kd_extend variant's recipe for `steps` steps (the corpus cycled as often as it takes)."""
    params = load_params("train_student")
    # no checkpoint on the way: the timing is the training's
    sft = params["sft"] | {"max_steps": steps, "save_steps": steps + 1, "bf16": resolve_bf16("auto")}
    examples, _ = training_examples(
        read_corpus(REPO / "data/corpora/kd_extend.parquet"), "text", 0.1, None, 0
    )
    dtype = resolve_dtype(params["dtype"])
    trainer = sft_trainer(
        REPO / "models/pretrained/student_instruct",
        examples,
        "text",
        work / "ckpt",
        params["lora"],
        sft,
        dtype,
    )
    reset(device)
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    tokens = steps * sft["per_device_train_batch_size"] * sft["max_length"]
    return {
        "steps": result.global_step,
        "seconds": round(seconds, 1),
        "steps_per_s": round(result.global_step / seconds, 2),
        "tokens_per_s": round(tokens / seconds),
        "bf16": sft["bf16"],
        "peak_gib": peak_gib(device),
    }


def mcqa(device: str, questions: int | None) -> dict:
    """D_eval in letter mode, `questions` of it (all where None), at mcqa's settings."""
    params = load_params("mcqa")
    frame = pd.read_parquet(REPO / "data/eval/questions/d_eval.parquet")
    frame = frame.head(questions) if questions else frame
    model, tokenizer = load_model(REPO / "models/pretrained/student_instruct", resolve_dtype(params["dtype"]))
    style = prompt_style(tokenizer, params["prompt_style"], params["num_fewshot"])
    batch = 64 if device == "cuda" else params["batch_size"]
    reset(device)
    started = time.perf_counter()
    scored = score_questions(
        model, tokenizer, frame, style, modes=("letter",), batch_size=batch, perturbation=False
    )
    seconds = time.perf_counter() - started
    return {
        "questions": len(scored),
        "seconds": round(seconds, 1),
        "questions_per_s": round(len(scored) / seconds, 2),
        "accuracy": round(float(scored["letter_acc"].mean()), 4),
        "batch_size": batch,
        "peak_gib": peak_gib(device),
    }


def embedder(device: str, pairs: int | None, work: Path) -> dict:
    """One epoch of train_embedder's default recipe (at most `pairs` pairs' worth of steps)."""
    from alia.embedder.training import train_embedder

    params = load_params("train_embedder")
    tasks = pd.read_parquet(REPO / "data/embed/tasks.parquet")
    training = {
        k: v for k, v in params["training"].items() if not k.startswith(("eval_", "save_", "load_best"))
    }
    training |= {
        "num_train_epochs": 1,
        "bf16": resolve_bf16("auto"),
        "eval_strategy": "no",
        "save_strategy": "no",
        "seed": 0,
        "metric_for_best_model": None,
    }
    if pairs:
        training["max_steps"] = max(1, pairs // training["per_device_train_batch_size"])
    reset(device)
    started = time.perf_counter()
    result = train_embedder(
        REPO / "models/pretrained/embedder",
        tasks[tasks["split"] == "train"],
        work / "embedder",
        params | {"training": training},
    )
    seconds = time.perf_counter() - started
    done = (
        result["steps"] * training["per_device_train_batch_size"]
    )  # pairs trained on (the last batch may be short)
    return {
        "seconds": round(seconds, 1),
        "steps": result["steps"],
        "pairs": done,
        "pairs_per_s": round(done / seconds, 1),
        "peak_gib": peak_gib(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--questions", type=int, default=None, help="D_eval questions (all if left out)")
    parser.add_argument("--pairs", type=int, default=None, help="embedder pairs (one epoch if left out)")
    parser.add_argument("--out", type=Path, default=REPO / "metrics" / "gpu_check.json")
    parser.add_argument(
        "--write-reference", action="store_true", help=f"write the figures to {REFERENCE.name}"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --device cpu for this machine's reference figures")
    machine = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"cpu:{torch.backends.cpu.get_cpu_capability()}"
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="alia-gpu-check-") as work:
        figures = {
            "machine": machine,
            "student": student(args.device, args.steps, Path(work)),
            "mcqa": mcqa(args.device, args.questions),
            "embedder": embedder(args.device, args.pairs, Path(work)),
        }
    figures["seconds"] = round(time.perf_counter() - started, 1)
    out = REFERENCE if args.write_reference else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    reference = json.loads(REFERENCE.read_text()) if REFERENCE.exists() and not args.write_reference else {}
    rows = [
        ("student steps/s", "student", "steps_per_s"),
        ("student tokens/s", "student", "tokens_per_s"),
        ("D_eval questions/s (letter)", "mcqa", "questions_per_s"),
        ("embedder pairs/s", "embedder", "pairs_per_s"),
        ("peak GiB: student", "student", "peak_gib"),
        ("peak GiB: MCQA", "mcqa", "peak_gib"),
        ("peak GiB: embedder", "embedder", "peak_gib"),
    ]
    print(f"{'':<30}{machine[:24]:>26}{reference.get('machine', 'CPU reference')[:24]:>26}{'ratio':>10}")
    for label, part, key in rows:
        ours, theirs = figures[part].get(key), reference.get(part, {}).get(key)
        ratio = f"{ours / theirs:.1f}x" if ours and theirs and "GiB" not in label else ""
        print(f"{label:<30}{ours!s:>26}{theirs!s:>26}{ratio:>10}")
    print(f"in all {figures['seconds']} s; figures in {out}")


if __name__ == "__main__":
    main()
