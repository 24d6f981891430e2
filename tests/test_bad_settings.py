"""Bad settings, prompts and outputs, as a new user makes them: each stage stops at once, before any model
loads, with one line naming the setting (or file) and what was expected, and a non-zero exit."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO
from test_errors import error_line, stage, stage_command

from alia.core.params import SECTIONS, load_params


@pytest.fixture
def project(tmp_path) -> Path:
    """params.yaml and the prompts, to spoil: the stages run with this folder as their root."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    return tmp_path


def spoil(project: Path, section: str, *keys: str, value=None, delete: bool = False) -> None:
    """Set (or delete) params.yaml section.key1.key2... in the project."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    node = params[section]
    for key in keys[:-1]:
        node = node[key]
    if delete:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run(project: Path, name: str, *args: str) -> str:
    """The stage's one error line (error_line fails on a traceback or a zero exit); paths relative to
    the project, as DVC gives them."""
    result = stage(name, *args, cwd=project)
    assert "Loading" not in result.stderr  # no model (nor checkpoint shard) was loaded first
    return error_line(result, name)


def train_student(project: Path) -> str:
    args = ["corpus.parquet", "pretrained", "adapter", "ckpt", "metrics.json", "plot.json"]
    return run(project, "train_student", "kd_base", *args)


def eval_pretrained(project: Path) -> str:
    return run(project, "eval_pretrained", "m", "nowhere", "questions", "m.json", "b.json", "p.parquet")


def test_every_section_of_params_yaml_is_valid_and_typed():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(params) - {"teacher"} == set(SECTIONS)  # the teacher's: alia.llm.client.ClientConfig
    for section in SECTIONS:
        load_params(section, REPO / "params.yaml")


def test_a_misspelt_trainer_setting(project):
    spoil(project, "train_student", "sft", "num_train_epoch", value=3)
    assert train_student(project) == (
        "params.yaml train_student.sft: 'num_train_epoch' is not a field of trl.SFTConfig "
        "(did you mean 'num_train_epochs'?)"
    )


def test_a_misspelt_section_key(project):
    spoil(project, "train_student", "replay_fractoin", value=0.1)
    assert (
        train_student(project) == "params.yaml train_student.replay_fractoin: not a setting of this section"
    )


def test_a_sample_of_the_wrong_type(project):
    spoil(project, "mcqa", "sets", "d_eval", "sample", value="abc")
    assert eval_pretrained(project) == (
        "params.yaml mcqa.sets.d_eval.sample: Input should be a valid integer, unable to parse string as "
        "an integer (got 'abc')"
    )


def test_a_negative_sample(project):
    spoil(project, "mcqa", "sets", "d_eval", "sample", value=-5)
    assert eval_pretrained(project) == (
        "params.yaml mcqa.sets.d_eval.sample: Input should be greater than or equal to 0 (got -5)"
    )


def teacher_stage(project: Path) -> str:
    """sensor_discovery on tables that do not exist: a bad teacher setting or prompt must stop it first."""
    shutil.copytree(REPO / "data" / "raw", project / "raw")
    rules = REPO / "data" / "vocabulary_rules.yaml"
    built = stage("tables", "raw", rules, "tables", "tables.json", cwd=project)
    assert built.returncode == 0, built.stderr
    return run(project, "sensor_discovery", "tables", str(rules), "facts", "cache.sqlite", "m.json")


def test_zero_concurrency(project):
    spoil(project, "teacher", "concurrency", value=0)
    assert teacher_stage(project) == (
        "params.yaml teacher.concurrency: Input should be greater than or equal to 1 (got 0)"
    )


def test_a_missing_key(project):
    spoil(project, "kd_base", "facts_per_document", delete=True)
    message = run(
        project, "kd_base", "t", "d", "r", "v", "kd_base.parquet", "rej.parquet", "cache.sqlite", "m.json"
    )
    assert (
        message == "params.yaml kd_base.facts_per_document: missing: every stage setting lives in params.yaml"
    )


def test_an_unknown_loss(project):
    spoil(project, "train_embedder", "loss", value="triplet")
    message = run(
        project, "train_embedder", "pretrained", "tasks.parquet", "out", "seeds", "m.json", "p.json"
    )
    assert message == (
        "params.yaml train_embedder.loss: Input should be 'contrastive', 'mnrl', 'cached_mnrl' or 'gist' "
        "(got 'triplet')"
    )


def test_an_unknown_model_source(project):
    spoil(project, "prepare_models", "embedder", "source", value="package:no_such_package/model")
    message = run(project, "prepare_models", "embedder", "models/pretrained/embedder")
    assert message == (
        "model package 'no_such_package' is not installed: run `make install` (see requirements/models.txt)"
    )


def test_a_jinja_error_in_a_prompt(project):
    prompt = project / "prompts" / "sensor_discovery.yaml"
    prompt.write_text(prompt.read_text().replace("{{ ", "{{ {% ", 1))
    message = teacher_stage(project)
    assert message.startswith("prompts/sensor_discovery.yaml, line ") and ": template error: " in message


def test_a_prompt_variable_that_does_not_exist(project):
    prompt = project / "prompts" / "sensor_discovery.yaml"
    spec = yaml.safe_load(prompt.read_text())
    spec["user"] += " {{ asset_colour }}"
    prompt.write_text(yaml.safe_dump(spec))
    message = teacher_stage(project)
    assert message.startswith("prompts/sensor_discovery.yaml: template error: 'asset_colour' is undefined; ")
    assert "the stage provides [" in message


def test_a_truncated_parquet_corpus(project):
    corpus = project / "kd_base.parquet"
    pd.DataFrame({"doc_id": [f"d{i}" for i in range(200)], "text": ["text"] * 200}).to_parquet(corpus)
    corpus.write_bytes(corpus.read_bytes()[: corpus.stat().st_size // 2])
    message = run(
        project,
        "kd_qa",
        "kd_base.parquet",
        "t",
        "r",
        "v",
        "qa.parquet",
        "raft.parquet",
        "rej.parquet",
        "cache.sqlite",
        "m.json",
    )
    assert message.startswith("kd_base.parquet: not a readable Parquet file (")
    assert not (project / "qa.parquet").exists()


def test_a_training_failure_under_accelerate_is_one_line(project):
    """train_student as dvc.yaml runs it, under `accelerate launch`: the stage's own line, no
    launcher traceback (CalledProcessError) after it."""
    command = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train_student"]["do"]["cmd"]
    launcher = command.split(" stages/train_student.py")[0].replace(
        "${train_student.accelerate_config}", str(REPO / load_params("train_student")["accelerate_config"])
    )
    corpus = project / "corpus.parquet"
    pd.DataFrame({"question": ["q"] * 50, "answer": ["a"] * 50}).to_parquet(corpus)
    corpus.write_bytes(corpus.read_bytes()[:100])
    args = ["kd_qa", corpus.name, "pretrained", "adapter", "ckpt", "metrics.json", "plot.json"]
    result = subprocess.run(
        [*launcher.split(), str(REPO / "stages" / "train_student.py"), *args],
        cwd=project, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "CalledProcessError" not in result.stderr
    assert error_line(result, "train_student").startswith("corpus.parquet: not a readable Parquet file (")


def test_an_output_folder_without_write_permission():
    # as root a mode bit stops nobody: the stage then runs as the unprivileged user `nobody`
    root = Path(tempfile.mkdtemp(prefix="alia-readonly-"))
    try:
        root.chmod(0o755)
        (root / "out").mkdir(mode=0o555)
        as_nobody = (
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        )
        out = [
            root / "out" / name
            for name in ("qa.parquet", "raft.parquet", "rej.parquet", "cache.sqlite", "m.json")
        ]
        facts = [REPO / "data" / "tables", root / "relevance", REPO / "data" / "vocabulary_rules.yaml"]
        result = subprocess.run(
            [*as_nobody, *stage_command("kd_qa", root / "kd_base.parquet", *facts, *out)],
            cwd=REPO, env=os.environ | {"HOME": str(root)}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        message = error_line(result, "kd_qa")
        assert message == f"{root / 'out'}: cannot write the output {out[0]} there (Permission denied)"
        assert list((root / "out").iterdir()) == []
    finally:
        (root / "out").chmod(0o755)
        shutil.rmtree(root)


def test_a_hub_model_id_on_a_machine_without_the_hub(project, monkeypatch):
    spoil(project, "prepare_models", "embedder", "source", value="nobody/no-such-model")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # a host that never resolves, online or not
    message = run(project, "prepare_models", "embedder", "models/pretrained/embedder")
    assert message == (
        "model source 'nobody/no-such-model': not an installed package (package:<module>/<file>), not a "
        "local path, and the hub (hub.invalid) cannot be reached from here to load it as a model id"
    )


THREE_STAGES = {  # stage: (its args, relative to the project; a numeric setting of its section)
    "kg": (["t", "d", "r", "k.parquet", "kg", "m.json", "p.json"], "include_eval_assets"),
    "kd_qa": (
        [
            "kd_base.parquet",
            "t",
            "r",
            "v",
            "qa.parquet",
            "raft.parquet",
            "rej.parquet",
            "cache.sqlite",
            "m.json",
        ],
        "documents",
    ),
    "build_eval": (["tables", "questions", "m.json"], "min_options"),
}


@pytest.mark.parametrize("name", THREE_STAGES)
def test_three_stages_refuse_a_misspelt_key_and_a_wrong_type(project, name):
    args, key = THREE_STAGES[name]
    original = (project / "params.yaml").read_text()
    spoil(project, name, key + "s", value=1)
    assert run(project, name, *args) == f"params.yaml {name}.{key}s: not a setting of this section"
    (project / "params.yaml").write_text(original)
    spoil(project, name, key, value="many")
    expected = (
        "a valid boolean, unable to interpret input"
        if key == "include_eval_assets"
        else "a valid integer, unable to parse string as an integer"
    )
    assert run(project, name, *args) == f"params.yaml {name}.{key}: Input should be {expected} (got 'many')"
