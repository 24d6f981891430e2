"""Errors a person can read: a stage stopped by bad input prints one line naming the file, row, column
or setting and what was expected, and exits with status 1; ALIA_DEBUG=1 brings the traceback back."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from alia.core.errors import one_line


def stage_command(name: str, *args: str | Path) -> list[str]:
    return [sys.executable, str(REPO / "stages" / f"{name}.py"), *map(str, args)]


# the stages' MLflow runs (a failed run each) go here, not into the repository's mlflow.db
RUNS = f"sqlite:///{tempfile.mkdtemp(prefix='alia-test-errors-')}/mlflow.db"


def stage(name: str, *args: str | Path, cwd: Path = REPO, debug: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ALIA_DEBUG"} | ({"ALIA_DEBUG": "1"} if debug else {})
    env["MLFLOW_TRACKING_URI"] = RUNS
    return subprocess.run(
        stage_command(name, *args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def error_line(result: subprocess.CompletedProcess, name: str) -> str:
    """The one line the stage printed, without its prefix; fails on a traceback or a zero exit."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    prefix, suffix = f"error: {name}: ", " (set ALIA_DEBUG=1 for the traceback)"
    assert lines[0].startswith(prefix) and lines[0].endswith(suffix)
    return lines[0].removeprefix(prefix).removesuffix(suffix)


@pytest.fixture
def raw(tmp_path) -> Path:
    """A copy of the source tables to spoil."""
    shutil.copytree(REPO / "data" / "raw", tmp_path / "raw")
    return tmp_path / "raw"


def tables_stage(raw: Path) -> subprocess.CompletedProcess:
    out = raw.parent
    return stage("tables", raw, REPO / "data" / "vocabulary_rules.yaml", out / "tables", out / "tables.json")


MATRIX = Path("iso17359") / "fm_sensor_matrix_long.csv"
FACTS = Path("iso14224") / "asset_kb_fact.json"


def test_an_empty_table(raw):
    (raw / MATRIX).write_text("")
    message = error_line(tables_stage(raw), "tables")
    expected = "empty file: expected the header asset,failure_mode,sensor,relevant and one row per cell"
    assert message == f"{raw / MATRIX}: {expected}"


def test_a_missing_table(raw):
    (raw / MATRIX).unlink()
    assert error_line(tables_stage(raw), "tables") == f"{raw / MATRIX}: no such file or directory"


def test_a_value_of_the_wrong_type(raw):
    facts = json.loads((raw / FACTS).read_text())
    asset = next(iter(facts["relevant_fm_for_each_asset"]))
    facts["relevant_fm_for_each_asset"][asset] = 7
    (raw / FACTS).write_text(json.dumps(facts))
    message = error_line(tables_stage(raw), "tables")
    assert message.startswith(
        f"{raw / FACTS}, row relevant_fm_for_each_asset[{asset!r}]"
    ) and message.endswith("column 'failure_mode': expected a non-empty list of names")


def test_an_unreadable_parquet(tmp_path):
    corpus = tmp_path / "kd_base.parquet"
    corpus.write_text("doc_id,text\nd1,not parquet\n")
    facts = [REPO / "data" / "tables", tmp_path / "relevance", REPO / "data" / "vocabulary_rules.yaml"]
    out = [
        tmp_path / n
        for n in ("qa.parquet", "raft.parquet", "rejects.parquet", "cache.sqlite", "metrics.json")
    ]
    message = error_line(stage("kd_qa", corpus, *facts, *out), "kd_qa")
    assert message.startswith(f"{corpus}: not a readable Parquet file (") and message.endswith(
        "): re-create it with `dvc repro` or `dvc pull`"
    )


def test_a_missing_model(tmp_path):
    (tmp_path / "questions").mkdir()
    out = [tmp_path / name for name in ("metrics.json", "breakdown.json", "predictions.parquet")]
    message = error_line(
        stage("eval_pretrained", "nowhere", tmp_path / "nowhere", tmp_path / "questions", *out),
        "eval_pretrained",
    )
    expected = "no model there (expected one of config.json, adapter_config.json, modules.json)"
    assert message == f"{tmp_path / 'nowhere'}: {expected}; `dvc repro` (or `dvc pull`) makes it"


@pytest.fixture
def project(tmp_path, raw) -> Path:
    """params.yaml, prompts and built tables: enough to run a teacher stage."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    assert tables_stage(raw).returncode == 0
    return tmp_path


def sensor_discovery(project: Path, **teacher) -> subprocess.CompletedProcess:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["teacher"] |= teacher
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return stage(
        "sensor_discovery", project / "tables", REPO / "data" / "vocabulary_rules.yaml", project / "facts",
        project / "cache.sqlite", project / "metrics.json", cwd=project,
    )  # fmt: skip


def test_an_unreachable_endpoint(project):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    result = sensor_discovery(project, base_url=url, model="m", api_key_env=None, retries=0)
    message = error_line(result, "sensor_discovery")
    assert (
        message.startswith(f"teacher.base_url {url}: 8 of 8 prompts failed")
        and "APIConnectionError" in message
    )


def test_a_setting_of_the_wrong_type(project):
    message = error_line(sensor_discovery(project, concurrency="many"), "sensor_discovery")
    assert message == (
        "params.yaml teacher.concurrency: Input should be a valid integer, unable to parse string as an "
        "integer (got 'many')"
    )


def test_alia_debug_brings_the_traceback_back(raw):
    (raw / MATRIX).write_text("")
    result = stage(
        "tables",
        raw,
        REPO / "data" / "vocabulary_rules.yaml",
        raw.parent / "t",
        raw.parent / "m.json",
        debug=True,
    )
    assert result.returncode == 1 and "Traceback (most recent call last)" in result.stderr
    assert "TableError" in result.stderr and "error: tables:" not in result.stderr


def test_a_bug_keeps_its_traceback():
    assert (
        one_line(FileNotFoundError(2, "No such file or directory", "x.csv"))
        == "x.csv: no such file or directory"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import alia.core.errors as e; e.install(); None.missing"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "Traceback" in result.stderr and "AttributeError" in result.stderr
