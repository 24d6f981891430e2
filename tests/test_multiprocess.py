"""train_student as users run it at full size, with several processes: `accelerate launch` with 2 CPU
processes (gloo) on a 2-layer model, against one process at the same global batch; a run killed
mid-way resumes from its checkpoint; the GPU configs load and validate as accelerate reads them."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType
from conftest import REPO

from alia.student.training import complete

TWO_CPUS = {
    "compute_environment": "LOCAL_MACHINE",
    "distributed_type": "MULTI_CPU",
    "mixed_precision": "no",
    "num_machines": 1,
    "num_processes": 2,
    "machine_rank": 0,
    "main_training_function": "main",
    "use_cpu": True,
    "rdzv_backend": "static",
    "same_network": True,
}


def project(root: Path, tiny_lm: Path, processes: int, max_steps: int) -> Path:
    """params.yaml with a small recipe at a global batch of 8 (8 on one process, 4 on each of two), a
    text corpus, the tiny model as the pretrained student, and the accelerate config."""
    root.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    sft = params["train_student"]["sft"] | {
        "max_steps": max_steps,
        "save_steps": 2,
        "max_length": 64,
        "per_device_train_batch_size": 8 // processes,
        "bf16": False,
        "learning_rate": 1e-3,
        "warmup_steps": 0,
        "seed": 0,
    }
    params["train_student"] |= {
        "sft": sft,
        "dtype": "float32",
        "replay_fraction": 0.0,
        "accelerate_config": "accelerate.yaml",
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    accelerate = (
        TWO_CPUS if processes == 2 else yaml.safe_load((REPO / "configs/accelerate/cpu.yaml").read_text())
    )
    (root / "accelerate.yaml").write_text(yaml.safe_dump(accelerate))
    words = ["vibration", "temperature", "bearing", "seal", "pump", "compressor", "leakage", "wear"]
    texts = [" ".join(words[(i + j) % len(words)] for j in range(40)) + "." for i in range(64)]
    pd.DataFrame({"doc_id": [f"d{i}" for i in range(64)], "text": texts}).to_parquet(root / "corpus.parquet")
    shutil.copytree(tiny_lm, root / "pretrained")
    return root


def launch(root: Path) -> subprocess.Popen:
    command = [
        "accelerate",
        "launch",
        "--quiet",
        "--config_file",
        "accelerate.yaml",
        str(REPO / "stages/train_student.py"),
        "kd_base",
        "corpus.parquet",
        "pretrained",
        "adapter",
        "ckpt",
        "metrics.json",
        "plot.json",
    ]
    env = os.environ | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "PYTHONPATH": str(REPO / "src"),
    }
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return subprocess.Popen(
        command,
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finished(root: Path) -> str:
    process = launch(root)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out[-3000:]
    return out


def runs(root: Path) -> pd.DataFrame:
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return mlflow.search_runs(search_all_experiments=True)


@pytest.mark.slow
def test_two_processes_train_one_adapter_as_one_process_does(tiny_lm, tmp_path):
    one = finished(project(tmp_path / "one", tiny_lm, processes=1, max_steps=8))
    two = finished(project(tmp_path / "two", tiny_lm, processes=2, max_steps=8))
    adapter = tmp_path / "two" / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == sorted(
        p.name for p in (tmp_path / "one" / "adapter").iterdir()
    )
    assert not list((tmp_path / "two").glob(".adapter.partial"))  # renamed into place, once
    assert len(runs(tmp_path / "two")) == 1  # one MLflow run: the other process logs nothing
    # the SFT dataset tokenised once (one progress bar starts): the other process reads what the first wrote
    started = re.compile(r"Tokenizing train dataset: +0%")
    assert len(started.findall(two)) == len(started.findall(one)) == 1
    assert two.count('{"run": ') == 1  # one process wrote the metrics and printed the run
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    reference = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert metrics["steps"] == reference["steps"] == 8
    # the same global batch: the loss curves agree (the shards differ, so not to the digit)
    losses = [r["loss"] for r in json.loads((tmp_path / "two" / "plot.json").read_text())]
    expected = [r["loss"] for r in json.loads((tmp_path / "one" / "plot.json").read_text())]
    assert len(losses) == len(expected) == 8 and losses[-1] < losses[0]
    assert abs(sum(losses) - sum(expected)) / sum(expected) < 0.1


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_from_its_checkpoint(tiny_lm, tmp_path):
    root = project(tmp_path / "two", tiny_lm, processes=2, max_steps=100)
    process = launch(root)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if any(complete(c) for c in (root / "ckpt").glob("checkpoint-*")):
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and both processes
    process.wait()
    assert not (root / "adapter").exists()
    out = finished(root)
    run = json.loads(next(line for line in out.splitlines() if line.startswith('{"run": ')))["run"]
    assert run["resumed_from_step"] >= 2
    assert json.loads((root / "metrics.json").read_text())["steps"] == 100
    assert (root / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("name", ["ddp_2xa100.yaml", "fsdp_2xa100.yaml"])
def test_the_gpu_configs_load_as_accelerate_reads_them(name):
    config = load_config_from_file(str(REPO / "configs/accelerate" / name))
    expected = DistributedType.FSDP if name.startswith("fsdp") else DistributedType.MULTI_GPU
    assert (
        config.distributed_type == expected and config.num_processes == 2 and config.mixed_precision == "bf16"
    )
    assert not config.use_cpu and config.num_machines == 1
    if expected == DistributedType.FSDP:
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # a whole adapter to save
