"""The source tables: read the raw ISO files, validate them, normalise them into Parquet.

Every reader stops at the first bad input with a `TableError` that names the file, the row and
the column, so a reliability engineer who edits a source table knows where to look.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from alia.core.io import TableError, read_arrow, read_json, read_text, write_parquet
from alia.data.vocabulary import Canonicaliser

# Raw files, relative to the raw data folder (data/raw/).
EQUIPMENT_CLASSES_FILE = "iso14224/iso14224_44_equipment_classes.json"
ASSET_FACTS_FILE = "iso14224/asset_kb_fact.json"
CANDIDATES_FILE = "iso14224/asset_kb_candidates.json"
EVAL_ASSETS_FILE = "iso17359/iso17359_10_assets.json"
MATRIX_FILE = "iso17359/fm_sensor_matrix_long.csv"
MATRIX_COLUMNS = ["asset", "failure_mode", "sensor", "relevant"]

# The stable schema of every table the `tables` stage writes. Later stages read them with
# `read_table`, which checks the schema, so a change here is a deliberate, visible one.
SCHEMAS: dict[str, pa.Schema] = {
    "equipment_classes": pa.schema(
        [
            ("equipment_class", pa.string()),  # canonical name, e.g. "Subsea blowout preventers"
            ("name_raw", pa.string()),
            ("abbreviation", pa.string()),  # "BOP" from "Subsea blowout preventers (BOP)", else ""
        ]
    ),
    "class_failure_modes": pa.schema(  # D_source: failure modes of the 44 ISO 14224 classes
        [
            ("equipment_class", pa.string()),
            ("failure_mode", pa.string()),  # canonical label
            ("failure_mode_raw", pa.string()),
        ]
    ),
    "eval_assets": pa.schema([("asset", pa.string()), ("name_raw", pa.string())]),  # D_eval
    "eval_asset_candidates": pa.schema(  # failure modes and sensors listed for each D_eval asset
        [
            ("asset", pa.string()),
            ("kind", pa.string()),  # "failure_mode" | "sensor"
            ("name", pa.string()),  # canonical label
            ("name_raw", pa.string()),
        ]
    ),
    "fm_sensor_matrix": pa.schema(  # the ISO 17359 tick table, one cell a row
        [
            ("asset", pa.string()),
            ("failure_mode", pa.string()),
            ("sensor", pa.string()),
            ("relevant", pa.bool_()),
            ("failure_mode_raw", pa.string()),
            ("sensor_raw", pa.string()),
        ]
    ),
    "vocabulary": pa.schema(  # raw spelling -> canonical name(s); a compound has one row per part
        [
            ("kind", pa.string()),  # "failure_mode" | "sensor"
            ("name", pa.string()),  # one canonical name
            ("label", pa.string()),  # canonical label of the whole alias ("oil leakage / oil consumption")
            ("alias", pa.string()),  # the raw spelling, exactly as in the source file
            ("source_files", pa.string()),  # where the alias occurs, comma-separated
        ]
    ),
}


def _require(obj: Any, key: str, kind: type, path: Path, row: Any = None) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise TableError(path, f"missing key '{key}'", row=row, column=key)
    value = obj[key]
    if not isinstance(value, kind):
        raise TableError(path, f"expected a {kind.__name__}, got {type(value).__name__}", row=row, column=key)
    if not value:
        raise TableError(path, "empty table", row=row, column=key)
    return value


def _name_list(
    values: Any, path: Path, column: str, row_prefix: str = "", key: Callable[[str], str] = str.casefold
) -> list[str]:
    """A non-empty list of non-empty strings, no two with the same `key` (by default: ignoring case)."""
    if not isinstance(values, list) or not values:
        raise TableError(path, "expected a non-empty list of names", row=row_prefix or None, column=column)
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        row = f"{row_prefix}[{i}]" if row_prefix else i
        if not isinstance(value, str) or not value.strip():
            raise TableError(path, f"expected a non-empty name, got {value!r}", row=row, column=column)
        identity = key(value.strip())
        if identity in seen:
            raise TableError(
                path, f"duplicate key {value!r} (first at index {seen[identity]})", row=row, column=column
            )
        seen[identity] = i
    return [v.strip() for v in values]


# --- asset names ----------------------------------------------------------------------------

_ABBREVIATION = re.compile(r"\s*\(([A-Z][A-Z0-9-]+)\)\s*$")


def asset_key(name: str) -> str:
    """The identity of an asset name: case, spacing and a trailing "(BOP)" do not matter."""
    return " ".join(_ABBREVIATION.sub("", name).split()).casefold()


def asset_display_name(raw: str) -> str:
    """Sentence case, keeping acronyms and mixed-case words ("Subsea pressure Vessels" -> "... vessels")."""
    words = _ABBREVIATION.sub("", raw).split()
    words = [w if i == 0 or not w.istitle() else w.lower() for i, w in enumerate(words)]
    name = " ".join(words)
    return name[:1].upper() + name[1:]


# --- the tables -----------------------------------------------------------------------------


@dataclass
class SourceTables:
    """All normalised tables, as DataFrames keyed by table name (see SCHEMAS)."""

    frames: dict[str, pd.DataFrame]

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.frames[name]

    def counts(self) -> dict[str, int]:
        counts = {name: len(df) for name, df in self.frames.items()}
        counts["relevant_ticks"] = int(self.frames["fm_sensor_matrix"]["relevant"].sum())
        for kind in ("sensor", "failure_mode"):
            vocab = self.frames["vocabulary"]
            counts[f"{kind}_names"] = int(vocab.loc[vocab["kind"] == kind, "name"].nunique())
        return counts


def build_tables(raw_dir: str | Path, rules: Canonicaliser) -> SourceTables:
    """Read and validate every raw source file and return the normalised tables."""
    raw_dir = Path(raw_dir)
    classes = read_equipment_classes(raw_dir / EQUIPMENT_CLASSES_FILE)
    eval_assets = read_eval_assets(raw_dir / EVAL_ASSETS_FILE)
    check_disjoint(classes, eval_assets, raw_dir / EQUIPMENT_CLASSES_FILE, raw_dir / EVAL_ASSETS_FILE)

    class_names = dict(
        zip(classes["equipment_class"].map(asset_key), classes["equipment_class"], strict=True)
    )
    eval_names = dict(zip(eval_assets["asset"].map(asset_key), eval_assets["asset"], strict=True))
    fm_rows, candidate_rows = read_asset_facts(raw_dir / ASSET_FACTS_FILE, class_names, eval_names)
    matrix = read_fm_sensor_matrix(raw_dir / MATRIX_FILE, eval_names)

    # Every raw spelling of every source file feeds the vocabulary; tables carry canonical labels.
    aliases: dict[tuple[str, str], set[str]] = {}

    def note(kind: str, raw: str, file: str) -> str:
        aliases.setdefault((kind, raw), set()).add(file)
        return rules.label(raw)

    class_fms = pd.DataFrame(
        [(cls, note("failure_mode", fm, ASSET_FACTS_FILE), fm) for cls, fm in fm_rows],
        columns=["equipment_class", "failure_mode", "failure_mode_raw"],
    )
    check_unique(class_fms, ["equipment_class", "failure_mode"], raw_dir / ASSET_FACTS_FILE)
    candidates = pd.DataFrame(
        [(asset, kind, note(kind, raw, ASSET_FACTS_FILE), raw) for asset, kind, raw in candidate_rows],
        columns=["asset", "kind", "name", "name_raw"],
    )
    matrix["failure_mode"] = [note("failure_mode", r, MATRIX_FILE) for r in matrix["failure_mode_raw"]]
    matrix["sensor"] = [note("sensor", r, MATRIX_FILE) for r in matrix["sensor_raw"]]
    check_unique(matrix, ["asset", "failure_mode", "sensor"], raw_dir / MATRIX_FILE, line_offset=2)
    for kind, raw in read_candidate_vocabulary(raw_dir / CANDIDATES_FILE):
        note(kind, raw, CANDIDATES_FILE)

    vocabulary = pd.DataFrame(
        [
            (kind, name, rules.label(raw), raw, ",".join(sorted(files)))
            for (kind, raw), files in sorted(aliases.items())
            for name in rules.names(raw)
        ],
        columns=list(SCHEMAS["vocabulary"].names),
    )
    frames = {
        "equipment_classes": classes,
        "class_failure_modes": class_fms,
        "eval_assets": eval_assets,
        "eval_asset_candidates": candidates,
        "fm_sensor_matrix": matrix[list(SCHEMAS["fm_sensor_matrix"].names)],
        "vocabulary": vocabulary,
    }
    return SourceTables({name: frames[name] for name in SCHEMAS})


def read_equipment_classes(path: Path) -> pd.DataFrame:
    names = _name_list(read_json(path), path, column="equipment_class", key=asset_key)
    return pd.DataFrame(
        {
            "equipment_class": [asset_display_name(n) for n in names],
            "name_raw": names,
            "abbreviation": [m.group(1) if (m := _ABBREVIATION.search(n)) else "" for n in names],
        }
    )


def read_eval_assets(path: Path) -> pd.DataFrame:
    names = _name_list(read_json(path), path, column="asset", key=asset_key)
    return pd.DataFrame({"asset": [asset_display_name(n) for n in names], "name_raw": names})


def check_disjoint(
    classes: pd.DataFrame, eval_assets: pd.DataFrame, class_file: Path, eval_file: Path
) -> None:
    """D_source (knowledge is generated about it) and D_eval (questions are asked about it) share no asset."""
    shared = set(classes["equipment_class"].map(asset_key)) & set(eval_assets["asset"].map(asset_key))
    if shared:
        raise TableError(
            eval_file, f"D_source ({class_file}) and D_eval share assets {sorted(shared)}", column="asset"
        )


def read_asset_facts(
    path: Path, class_names: dict[str, str], eval_names: dict[str, str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Failure modes per D_source class, and the failure modes and sensors listed per D_eval asset."""
    facts = read_json(path)
    fm_table = _require(facts, "relevant_fm_for_each_asset", dict, path)
    sensor_table = _require(facts, "relevant_sensors_for_each_asset", dict, path)
    class_fms: list[tuple[str, str]] = []
    candidates: list[tuple[str, str, str]] = []
    for column, kind, table in (
        ("relevant_fm_for_each_asset", "failure_mode", fm_table),
        ("relevant_sensors_for_each_asset", "sensor", sensor_table),
    ):
        for asset_raw, names in table.items():
            row = f"{column}[{asset_raw!r}]"
            names = _name_list(names, path, column=kind, row_prefix=row)
            key = asset_key(asset_raw)
            if key in class_names and kind == "failure_mode":
                class_fms += [(class_names[key], name) for name in names]
            elif key in eval_names:
                candidates += [(eval_names[key], kind, name) for name in names]
            else:
                known = "an ISO 14224 class" if kind == "failure_mode" else "an ISO 17359 asset"
                raise TableError(
                    path, f"unknown asset {asset_raw!r}: expected {known}", row=row, column="asset"
                )
    missing = sorted(set(class_names.values()) - {cls for cls, _ in class_fms})
    if missing:
        raise TableError(
            path, f"no failure modes for equipment classes {missing}", column="relevant_fm_for_each_asset"
        )
    return class_fms, candidates


def read_fm_sensor_matrix(path: Path, eval_names: dict[str, str]) -> pd.DataFrame:
    """The ISO 17359 tick table; rows are reported as file lines (the header is line 1)."""
    text = read_text(path)
    if not text.strip():
        raise TableError(
            path, f"empty file: expected the header {','.join(MATRIX_COLUMNS)} and one row per cell"
        )
    try:
        raw = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as err:
        raise TableError(path, f"not a valid CSV: {err}") from None
    missing = [c for c in MATRIX_COLUMNS if c not in raw.columns]
    if missing:
        raise TableError(
            path, f"missing column(s) {missing}; expected columns {MATRIX_COLUMNS}", row=1, column=missing[0]
        )
    if raw.empty:
        raise TableError(path, "empty table: expected one row per (asset, failure_mode, sensor) cell")
    for column in MATRIX_COLUMNS:
        blank = raw.index[raw[column].str.strip() == ""]
        if len(blank):
            raise TableError(path, "empty value", row=int(blank[0]) + 2, column=column)
    bad = raw.index[~raw["relevant"].str.strip().isin(["0", "1"])]
    if len(bad):
        value = raw.at[bad[0], "relevant"]
        raise TableError(path, f"expected 0 or 1, got {value!r}", row=int(bad[0]) + 2, column="relevant")
    assets = []
    for i, name in enumerate(raw["asset"]):
        key = asset_key(name)
        if key not in eval_names:
            raise TableError(
                path,
                f"unknown asset {name!r}: expected one of the ISO 17359 assets",
                row=i + 2,
                column="asset",
            )
        assets.append(eval_names[key])
    matrix = pd.DataFrame(
        {
            "asset": assets,
            "failure_mode_raw": raw["failure_mode"].str.strip(),
            "sensor_raw": raw["sensor"].str.strip(),
            "relevant": raw["relevant"].str.strip() == "1",
        }
    )
    check_unique(matrix, ["asset", "failure_mode_raw", "sensor_raw"], path, line_offset=2)
    return matrix


def check_unique(df: pd.DataFrame, key: list[str], path: Path, line_offset: int = 0) -> None:
    duplicated = df.index[df.duplicated(key)]
    if len(duplicated):
        i = int(duplicated[0])
        first = int(df.index[(df[key] == df.loc[i, key]).all(axis=1)][0])
        raise TableError(
            path,
            f"duplicate key {tuple(df.loc[i, key])} (first at row {first + line_offset})",
            row=i + line_offset,
            column=key[-1],
        )


def read_candidate_vocabulary(path: Path) -> Iterable[tuple[str, str]]:
    """(kind, raw name) for every sensor and failure-mode candidate."""
    candidates = read_json(path)
    for column, kind in (("sensor_candidates", "sensor"), ("failure_mode_candidates", "failure_mode")):
        groups = _require(candidates, column, dict, path)
        for group, entry in groups.items():
            names = _require(entry, column, list, path, row=f"{column}[{group!r}]")
            for name in _name_list(names, path, column=column, row_prefix=f"{column}[{group!r}]"):
                yield kind, name


# --- Parquet --------------------------------------------------------------------------------


def write_tables(tables: SourceTables, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    for name, df in tables.frames.items():
        table = pa.Table.from_pandas(df, schema=SCHEMAS[name], preserve_index=False)
        write_parquet(table, out_dir / f"{name}.parquet")


def read_table(name: str, tables_dir: str | Path) -> pd.DataFrame:
    """One normalised table, checked against its schema."""
    path = Path(tables_dir) / f"{name}.parquet"
    table = read_arrow(path)
    schema = table.schema.remove_metadata()
    if not schema.equals(SCHEMAS[name]):
        raise TableError(path, f"schema {schema} differs from the expected {SCHEMAS[name]}")
    return table.to_pandas()


def read_tables(tables_dir: str | Path) -> SourceTables:
    return SourceTables({name: read_table(name, tables_dir) for name in SCHEMAS})
