import json

import pyarrow.parquet as pq
import pytest

from alia.core.io import TableError
from alia.data.tables import SCHEMAS, build_tables, read_table, read_tables, write_tables

MATRIX = "iso17359/fm_sensor_matrix_long.csv"


def test_row_counts(tables):
    counts = tables.counts()
    assert counts["equipment_classes"] == 44
    assert counts["eval_assets"] == 10
    assert counts["fm_sensor_matrix"] == 1342
    assert counts["relevant_ticks"] == 470
    assert tables["fm_sensor_matrix"]["asset"].nunique() == 10
    assert tables["class_failure_modes"]["equipment_class"].nunique() == 44


def test_d_source_and_d_eval_share_no_asset(tables):
    classes = set(tables["equipment_classes"]["equipment_class"].str.casefold())
    assets = set(tables["eval_assets"]["asset"].str.casefold())
    assert classes.isdisjoint(assets)
    assert set(tables["fm_sensor_matrix"]["asset"]) == set(tables["eval_assets"]["asset"])


def test_matrix_uses_canonical_names_and_keeps_raw(tables):
    m = tables["fm_sensor_matrix"]
    assert "temparature" in set(m["sensor_raw"]) and "temparature" not in set(m["sensor"])
    row = m[(m["sensor_raw"] == "compresor pressure/ pressure ratio")].iloc[0]
    assert row["sensor"] == "compressor pressure / pressure ratio"
    # "temparature" and "temperature" never both label one asset's column: no canonical duplicates.
    assert not m.duplicated(["asset", "failure_mode", "sensor"]).any()


def test_vocabulary_aliases(tables):
    v = tables["vocabulary"]
    utility = v[v["name"] == "external leakage - utility medium"]
    assert set(utility["alias"]) == {
        "External leakage - utility medium",
        "External leakage — utility medium",
        "External leakage utility medium",
    }
    parts = v[(v["kind"] == "sensor") & (v["alias"] == "Oil leakage/ consumption")]
    assert list(parts["name"]) == ["oil leakage", "oil consumption"]
    assert set(parts["label"]) == {"oil leakage / oil consumption"}
    assert not v.duplicated(["kind", "alias", "name"]).any()


def test_parquet_round_trip_keeps_schema(tables, tmp_path):
    write_tables(tables, tmp_path)
    for name, schema in SCHEMAS.items():
        assert pq.read_schema(tmp_path / f"{name}.parquet").remove_metadata().equals(schema)
    assert read_tables(tmp_path).counts() == tables.counts()


def test_read_table_rejects_a_changed_schema(tables, tmp_path):
    write_tables(tables, tmp_path)
    tables["eval_assets"].rename(columns={"asset": "name"}).to_parquet(tmp_path / "eval_assets.parquet")
    with pytest.raises(TableError, match="eval_assets.parquet: schema"):
        read_table("eval_assets", tmp_path)


# --- bad input: each case names the file, the row and the column ------------------------------


def _edit_matrix(raw_copy, edit):
    path = raw_copy / MATRIX
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def test_missing_column(raw_copy, rules):
    _edit_matrix(raw_copy, lambda lines: [",".join(line.split(",")[:3]) for line in lines])
    with pytest.raises(TableError) as err:
        build_tables(raw_copy, rules)
    assert str(err.value).startswith(
        f"{raw_copy / MATRIX}, row 1, column 'relevant': missing column(s) ['relevant']"
    )


def test_empty_table(raw_copy, rules):
    _edit_matrix(raw_copy, lambda lines: lines[:1])
    with pytest.raises(TableError, match=r"fm_sensor_matrix_long.csv: empty table"):
        build_tables(raw_copy, rules)


def test_empty_json_table(raw_copy, rules):
    (raw_copy / "iso17359/iso17359_10_assets.json").write_text("[]")
    with pytest.raises(
        TableError, match=r"iso17359_10_assets.json, column 'asset': expected a non-empty list"
    ):
        build_tables(raw_copy, rules)


def test_duplicate_key(raw_copy, rules):
    # line 2 repeated as line 1344 (the header is line 1)
    _edit_matrix(raw_copy, lambda lines: [*lines, lines[1]])
    with pytest.raises(TableError) as err:
        build_tables(raw_copy, rules)
    assert str(err.value) == (
        f"{raw_copy / MATRIX}, row 1344, column 'sensor_raw': duplicate key "
        "('Electric motor', 'bearing damage', 'axial flux') (first at row 2)"
    )


def test_duplicate_after_canonicalisation(raw_copy, rules):
    # "temperature" and "temparature" are one sensor: a second column for it is a duplicate.
    _edit_matrix(
        raw_copy, lambda lines: [*lines, "pump,rotor rub,temparature,1", "pump,rotor rub,temperature,0"]
    )
    with pytest.raises(
        TableError,
        match=r"row 1345, column 'sensor': duplicate key "
        r"\('Pump', 'rotor rub', 'temperature'\) \(first at row 1344\)",
    ):
        build_tables(raw_copy, rules)


def test_unknown_asset_in_matrix(raw_copy, rules):
    _edit_matrix(raw_copy, lambda lines: [*lines[:5], "wind turbine,unbalance,vibration,1", *lines[5:]])
    with pytest.raises(TableError) as err:
        build_tables(raw_copy, rules)
    assert str(err.value) == (
        f"{raw_copy / MATRIX}, row 6, column 'asset': unknown asset 'wind turbine': "
        "expected one of the ISO 17359 assets"
    )


def test_unknown_asset_in_facts(raw_copy, rules):
    path = raw_copy / "iso14224/asset_kb_fact.json"
    facts = json.loads(path.read_text())
    facts["relevant_fm_for_each_asset"]["Wind turbines"] = ["Vibration"]
    path.write_text(json.dumps(facts))
    with pytest.raises(TableError) as err:
        build_tables(raw_copy, rules)
    assert str(err.value) == (
        f"{path}, row relevant_fm_for_each_asset['Wind turbines'], column 'asset': "
        "unknown asset 'Wind turbines': expected an ISO 14224 class"
    )


def test_bad_tick_value(raw_copy, rules):
    _edit_matrix(raw_copy, lambda lines: [*lines[:3], lines[3].rsplit(",", 1)[0] + ",yes", *lines[4:]])
    with pytest.raises(TableError, match=r"row 4, column 'relevant': expected 0 or 1, got 'yes'"):
        build_tables(raw_copy, rules)


def test_non_utf8_file(raw_copy, rules):
    path = raw_copy / MATRIX
    data = path.read_bytes().splitlines(keepends=True)
    data[9] = data[9].replace(b"electric motor", b"electric m\xf6tor")  # Latin-1 ö on line 10
    path.write_bytes(b"".join(data))
    with pytest.raises(TableError) as err:
        build_tables(raw_copy, rules)
    assert str(err.value).startswith(
        f"{path}, row 10, column 'asset': byte 0xf6 at character 11 is not UTF-8"
    )


def test_invalid_json(raw_copy, rules):
    path = raw_copy / "iso14224/iso14224_44_equipment_classes.json"
    path.write_text('[\n  "Top drives",\n  "Cranes"\n')
    with pytest.raises(TableError, match=r"iso14224_44_equipment_classes.json, row 4: invalid JSON"):
        build_tables(raw_copy, rules)


def test_duplicate_asset_up_to_its_abbreviation(raw_copy, rules):
    path = raw_copy / "iso14224/iso14224_44_equipment_classes.json"
    path.write_text(json.dumps([*json.loads(path.read_text()), "Subsea blowout preventers (BOP)"]))
    with pytest.raises(TableError) as err:
        build_tables(raw_copy, rules)
    assert str(err.value) == (
        f"{path}, row 44, column 'equipment_class': duplicate key 'Subsea blowout preventers (BOP)' "
        "(first at index 1)"
    )


def test_overlapping_d_source_and_d_eval(raw_copy, rules):
    path = raw_copy / "iso14224/iso14224_44_equipment_classes.json"
    path.write_text(json.dumps([*json.loads(path.read_text()), "Pump"]))
    with pytest.raises(TableError, match=r"D_source .* and D_eval share assets \['pump'\]"):
        build_tables(raw_copy, rules)
