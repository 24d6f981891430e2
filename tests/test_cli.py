import json

from conftest import RAW

from alia.cli import main


def test_kg_lists_a_nodes_edges(tables, tmp_path, capsys):
    from alia.kg import from_tables

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
