"""Stage train_student@<variant>: a LoRA adapter on one KD corpus (plus replay), run by `accelerate launch`.

accelerate launch --config_file <config> stages/train_student.py <variant> <models_dir> <out_dir>
    <metrics_dir> <plots_dir>
"""

import json
import sys
from pathlib import Path

import mlflow
from accelerate import PartialState

from alia.params import load_params
from alia.student import read_corpus, train_adapter, training_examples
from alia.tracking import start_run

variant = sys.argv[1]
models_dir, out_dir, metrics_dir, plots_dir = map(Path, sys.argv[2:6])
params = load_params("train_student")
config = params["variants"][variant]
state = PartialState()  # the process group `accelerate launch` set up (one CPU process by default)

examples, counts = training_examples(
    read_corpus(config["corpus"]),
    config["format"],
    params["replay_fraction"],
    params["documents"] or None,
    params["training"]["seed"],
)
run_params = {**{k: v for k, v in params.items() if k != "variants"}, **config, **counts}


def train() -> dict:
    return train_adapter(
        models_dir / config["student"],
        examples,
        config["format"],
        out_dir / variant,
        Path("checkpoints/student") / variant,  # outside DVC's outputs, so that a crash leaves them
        params["lora"],
        params["training"],
        report_to=["mlflow"] if state.is_main_process else [],
    )


if state.is_main_process:
    with start_run("train_student", run_params, variant=variant):
        result = train()
        mlflow.log_metrics({k: v for k, v in result.items() if isinstance(v, int | float)})
    metrics = {k: v for k, v in result.items() if k != "losses"} | counts
    for directory, content in ((metrics_dir, metrics), (plots_dir, result["losses"])):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{variant}.json").write_text(json.dumps(content, indent=2) + "\n")
    print(json.dumps(metrics))
else:
    train()
