"""Stage train_student@<corpus>: a LoRA adapter on one KD corpus (plus replay), run by `accelerate launch`.

accelerate launch --config_file <config> stages/train_student.py <variant> <corpus> <pretrained_dir>
    <out_dir> <checkpoint_dir> <metrics.json> <plot.json>

An interrupted run resumes from checkpoint_dir (kept outside DVC's outputs, so that a crash leaves it).
"""

import sys
from pathlib import Path

from accelerate import PartialState

from alia.cards import write_adapter_card
from alia.core.params import load_params
from alia.core.precision import report, resolve_bf16, resolve_dtype
from alia.core.tracking import check_outputs, finish_stage, start_run
from alia.kd.corpora import read_corpus
from alia.student.training import train_adapter, training_examples

variant = sys.argv[1]
corpus, pretrained_dir, out_dir, checkpoint_dir, metrics_file, plot_file = map(Path, sys.argv[2:8])
check_outputs(out_dir, checkpoint_dir, metrics_file, plot_file)  # an unwritable folder stops it now
params = load_params("train_student")
config = params["variants"][variant]
state = PartialState()  # the process group `accelerate launch` set up (one CPU process by default)
# `auto`: bf16 where the hardware computes it natively, else float32 (alia.core.precision)
sft = params["sft"] | config.get("sft", {})
sft["bf16"] = resolve_bf16(sft.get("bf16", False))
dtype = resolve_dtype(params["dtype"])
precision = report(f"train_student@{variant}", dtype=dtype, bf16=sft["bf16"]) if state.is_main_process else {}

examples, counts = training_examples(
    read_corpus(corpus),
    config["format"],
    params["replay_fraction"],
    params["documents"] or None,
    params["sft"]["seed"],
)
# the settings as resolved here (the card's too); which machine chose them goes to MLflow alone
run_params = {
    **{k: v for k, v in params.items() if k != "variants"},
    **config,
    **counts,
    "dtype": dtype,
    "sft": sft,
}


def train() -> dict:
    return train_adapter(
        pretrained_dir,
        examples,
        config["format"],
        out_dir,
        checkpoint_dir,
        params["lora"] | config.get("lora", {}),  # a variant may carry its own recipe (configs/controls.yaml)
        sft,
        dtype=dtype,
        report_to=["mlflow"] if state.is_main_process else [],
    )


if state.is_main_process:
    # the run is open while training, so that the trainer logs its loss curve into it
    with start_run("train_student", run_params | {"precision": precision}, variant=variant):
        result = train()
        run_stats = {k: result.pop(k) for k in ("runtime_s", "resumed_from_step")}
        metrics = {k: v for k, v in result.items() if k != "losses"} | counts
        write_adapter_card(out_dir, variant, pretrained_dir, corpus, config["format"], run_params, metrics)
        finish_stage(
            "train_student",
            metrics,
            metrics_file,
            plots={plot_file: result["losses"]},
            run_stats=run_stats,
            inputs={corpus: "training"},
        )
else:
    train()
