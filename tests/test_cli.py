import json

from conftest import RAW

from alia.cli import main


def test_kg_lists_a_nodes_edges(tables, tmp_path, capsys):
    from alia.data.kg import from_tables

    from_tables(tables).write(tmp_path, graphml=False)
    assert main(["kg", "asset:Pump", "--kg-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 30  # the ISO 17359 pump: 8 failure modes and 22 sensors
    assert lines[0].split() == [
        "experiences",
        "failure_mode:bearing",
        "damage",
        "(table:",
        "iso14224/asset_kb_fact.json)",
    ]
    assert main(["kg", "asset:Windmill", "--kg-dir", str(tmp_path)]) == 2


def test_mcqa_writes_parquet(tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "q.parquet"
    assert main(["mcqa", str(RAW / "dev" / "expert_mcqa_50.jsonl"), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["questions"] == 50 and summary["by_asset"]["pump"] == 5
    assert len(pd.read_parquet(out)) == 50


def test_exp_run_passes_an_overlay_file_as_set_params(tmp_path, monkeypatch):
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command: calls.append(command) or 0)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        "train_student:\n  sft:\n    learning_rate: 5e-6\n  variants:\n    kd_base: {student: student_pt}\n"
        "  lora:\n    target_modules: [q_proj, v_proj]\n"
    )
    assert main(["exp", "run", str(overlay), "-n", "full", "--queue"]) == 0
    assert calls == [
        ["dvc", "exp", "run"]
        + ["-S", "train_student.sft.learning_rate=5.0e-06"]
        + ["-S", "train_student.variants.kd_base.student=student_pt"]
        + ["-S", "train_student.lora.target_modules=[q_proj, v_proj]"]
        + ["-n", "full", "--queue"]
    ]


def test_every_overlay_in_configs_names_only_existing_params():
    """configs/*.yaml change params.yaml's settings; a key that is not there would be a silent no-op
    (except a new training variant: configs/controls.yaml adds the positive controls)."""
    import yaml
    from conftest import REPO

    from alia.core.params import overlay_args

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for overlay in sorted((REPO / "configs").glob("*.yaml")):
        for arg in overlay_args(overlay, REPO / "params.yaml")[1::2]:
            if arg.startswith("+"):  # a key it adds: only a new training variant
                assert arg.startswith("+train_student.variants."), f"{overlay.name}: {arg} adds a setting"
                continue
            node = params
            for key in arg.split("=", 1)[0].split("."):
                assert isinstance(node, dict) and key in node, f"{overlay.name}: {arg} is not in params.yaml"
                node = node[key]


def test_ask_defaults_are_the_paths_eval_agent_reads(tmp_path, monkeypatch):
    """`alia ask` reads its default paths off stage eval_agent's command line: one home, never left behind."""
    import yaml
    from conftest import REPO

    from alia.cli import ask_defaults

    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    command = dvc["stages"]["eval_agent"]["cmd"].split()
    monkeypatch.chdir(REPO)
    defaults = ask_defaults()
    assert list(defaults.values()) == [
        "models/embedder",
        "models/pretrained/embedder",  # ${train_embedder.pretrained}, as params.yaml sets it
        "data/embed/tasks.parquet",
        "data/embed/descriptions.parquet",
        "data/tables/vocabulary.parquet",
        "data/vocabulary_rules.yaml",
    ]
    assert command[2] == defaults["embedder"] and command[4:8] == list(defaults.values())[2:]
    # a moved output moves the default with it
    dvc["stages"]["eval_agent"]["cmd"] = dvc["stages"]["eval_agent"]["cmd"].replace(
        "models/embedder", "models/e2"
    )
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(dvc))
    monkeypatch.chdir(tmp_path)
    assert ask_defaults()["embedder"] == "models/e2"
