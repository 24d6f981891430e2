import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest

from alia.core.tracking import MAX_PARAM_LENGTH, flatten_params, start_run, tracking_uri


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_default_store_is_sqlite_in_the_repo(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_temporary_experiment_copies_log_to_the_repository(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / ".dvc" / "tmp" / "exps" / "tmpab12"))
    assert tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_run_is_tagged_with_stage_commit_and_experiment(store, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "lora-r16")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123abc")
    with start_run("train_student", params={"lora": {"r": 16, "alpha": 32}}) as run:
        mlflow.log_metric("acc", 0.5)
    stored = mlflow.MlflowClient(store).get_run(run.info.run_id)
    assert stored.data.tags["alia.stage"] == "train_student"
    assert stored.data.tags["dvc.exp_name"] == "lora-r16"
    assert stored.data.tags["dvc.exp_baseline_rev"] == "0123abc"
    assert len(stored.data.tags["mlflow.source.git.commit"]) == 40
    assert stored.data.params == {"lora.r": "16", "lora.alpha": "32"}
    assert stored.data.metrics == {"acc": 0.5}
    assert stored.info.run_name == "train_student@lora-r16"


def test_plain_repro_has_no_experiment_tag(store, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    with start_run("kg") as run:
        pass
    assert "dvc.exp_name" not in mlflow.MlflowClient(store).get_run(run.info.run_id).data.tags


def test_long_params_fit_mlflow_limit():
    flat = flatten_params({"prompt": "x" * 2000, "nested": {"deep": {"k": 1}}})
    assert len(flat["prompt"]) == MAX_PARAM_LENGTH and flat["prompt"].endswith("...")
    assert flat["nested.deep.k"] == "1"


def test_finish_stage_writes_files_and_logs_every_number(store, tmp_path, capsys):
    from alia.core.tracking import finish_stage

    metrics = {"questions": 40, "d_eval": {"hit@1": 0.25, "ci": [0.1, 0.4], "by": {"pump": 3}}, "ok": True}
    plot = [{"step": 1, "loss": 2.5}]
    finish_stage(
        "build_eval", metrics, tmp_path / "m" / "x.json", {"seed": 0}, plots={tmp_path / "p" / "x.json": plot}
    )
    assert json.loads((tmp_path / "m" / "x.json").read_text()) == metrics
    assert json.loads((tmp_path / "p" / "x.json").read_text()) == plot
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == metrics
    (stored,) = mlflow.MlflowClient(store).search_runs(
        [mlflow.get_experiment_by_name("alia").experiment_id], "tags.`alia.stage` = 'build_eval'"
    )
    # numbers only, nested names dotted, "@" spelled out (MLflow allows none)
    assert stored.data.metrics == {"questions": 40, "d_eval.hit_at_1": 0.25, "d_eval.by.pump": 3}
    assert stored.data.params == {"seed": "0"}


def test_finish_stage_logs_into_the_run_in_progress(store, tmp_path):
    from alia.core.tracking import finish_stage

    with start_run("train_student", {"lora": {"r": 8}}, variant="kd_qa") as run:
        finish_stage("train_student", {"steps": 2}, tmp_path / "m.json")
    stored = mlflow.MlflowClient(store).get_run(run.info.run_id)
    assert stored.data.metrics == {"steps": 2} and stored.data.params == {"lora.r": "8"}
    assert len(mlflow.MlflowClient(store).search_runs([run.info.experiment_id])) == 1


def test_finish_stage_keeps_run_stats_out_of_the_file_and_logs_the_inputs(
    store, tmp_path, monkeypatch, capsys
):
    from alia.core.tracking import finish_stage

    monkeypatch.chdir(tmp_path)  # dvc.lock is read from the repository root, where DVC runs a stage
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.parquet").write_bytes(b"rows")
    lock = {"stages": {"kd_qa": {"outs": [{"path": "data/corpus.parquet", "md5": "c" * 32}]}}}
    (tmp_path / "dvc.lock").write_text(json.dumps(lock))
    with start_run("train_student") as run:
        finish_stage(
            "train_student",
            {"steps": 2},
            "m.json",
            run_stats={"runtime_s": 12.5, "teacher": {"calls": 3}},
            inputs={"data/corpus.parquet": "training"},
        )
    assert json.loads((tmp_path / "m.json").read_text()) == {"steps": 2}
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {
        "run": {"runtime_s": 12.5, "teacher": {"calls": 3}}
    }
    stored = mlflow.MlflowClient(store).get_run(run.info.run_id)
    assert stored.data.metrics == {"steps": 2, "run.runtime_s": 12.5, "run.teacher.calls": 3}
    (logged,) = stored.inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest, logged.dataset.source_type) == (
        "data/corpus.parquet",
        "c" * 32,
        "local",
    )
    assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == "training"


# --- runs that tell the truth: killed stages end, durations cover the stage's work ------------------

STAGE = """
import sys, time
from alia.core.tracking import start_run
with start_run("train_student", variant="kd_qa") as run:
    print(run.info.run_id, flush=True)
    time.sleep(120)
"""


def _started_stage(tmp_path, store):
    """A stage's process inside its run (what stages/train_student.py does while it trains)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    proc = subprocess.Popen(
        [sys.executable, "-c", STAGE], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    return proc, proc.stdout.readline().strip()


def test_a_stage_killed_by_sigterm_ends_its_run_killed(store, tmp_path):
    proc, run_id = _started_stage(tmp_path, store)
    assert mlflow.MlflowClient(store).get_run(run_id).info.status == "RUNNING"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1].startswith("error: -c: killed by SIGTERM")  # one line, no traceback
    run = mlflow.MlflowClient(store).get_run(run_id).info
    assert run.status == "KILLED" and run.end_time is not None


def test_a_run_left_running_by_sigkill_is_ended_by_the_next_run(store, tmp_path):
    proc, run_id = _started_stage(tmp_path, store)
    proc.send_signal(signal.SIGKILL)  # nothing in the process can end its run
    proc.communicate(timeout=60)
    client = mlflow.MlflowClient(store)
    assert client.get_run(run_id).info.status == "RUNNING"
    with start_run("kg") as run:  # the next stage to run on this host
        pass
    assert client.get_run(run_id).info.status == "KILLED"
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_a_stage_that_fails_ends_its_run_failed_and_a_live_one_stays_running(store, tmp_path):
    proc, alive = _started_stage(tmp_path, store)  # a stage running beside this one
    try:
        with pytest.raises(ValueError), start_run("kg") as run:
            raise ValueError("bad row")
        client = mlflow.MlflowClient(store)
        assert client.get_run(run.info.run_id).info.status == "FAILED"
        assert client.get_run(alive).info.status == "RUNNING"
    finally:
        proc.kill()
        proc.communicate()


def test_a_run_opened_at_the_stage_end_starts_when_the_stage_did(store, tmp_path, monkeypatch):
    from alia.core import tracking

    began = int(time.time() * 1000) - 90_000  # a teacher stage that worked 90 s before its end
    monkeypatch.setattr(tracking, "STARTED_MS", began)
    tracking.finish_stage("kd_base", {"documents": 3}, tmp_path / "kd_base.json")
    (run,) = mlflow.MlflowClient(store).search_runs(
        [mlflow.get_experiment_by_name("alia").experiment_id], "tags.`alia.stage` = 'kd_base'"
    )
    assert run.info.start_time == began and run.info.end_time - run.info.start_time >= 90_000
