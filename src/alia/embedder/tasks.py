"""The embedder's nine retrieval tasks: (query, relevant items, candidate items), split by asset.

| task | query | relevant items | source |
|---|---|---|---|
| A2S | asset | sensors | ISO 17359 matrix |
| FM2S | asset, failure mode | sensors | ISO 17359 matrix |
| S2FM | asset, sensor | failure modes | ISO 17359 matrix |
| C2FM | component | failure modes | taxonomy seed (components) |
| FM2CMP | asset, failure mode | components | ISO 17359 matrix + taxonomy seed |
| FM2CLS | failure mode | failure-mode class | taxonomy seed (Table B.2 mechanisms) |
| E2CAT | equipment category | equipment classes | taxonomy seed (Table A.4) |
| E2CLT | equipment class | equipment types | taxonomy seed |
| EU2SU | equipment unit | subunits | taxonomy seed |

Queries of the tasks with an asset are split train/validation/test by asset (one split of the 10
ISO 17359 assets for all of them, so no test asset is seen in training by any task); the others
are split at random. Every query starts with an instruction drawn from several paraphrases.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

if TYPE_CHECKING:
    from alia.llm.client import LLMClient
    from alia.llm.prompts import Prompt

SPLITS = ("train", "validation", "test")
MATRIX_SOURCE = "ISO 17359 condition-monitoring tables (data/tables/fm_sensor_matrix.parquet)"
SEED_SOURCE = "ISO 14224:2016 taxonomy seed (data/iso14224_taxonomy.yaml)"

INSTRUCTIONS = {
    "A2S": [
        "Retrieve the sensors that monitor the condition of this asset",
        "Find condition-monitoring measurements for this equipment",
        "Which sensors are used to monitor this asset?",
    ],
    "FM2S": [
        "Retrieve the sensors that detect this failure mode of the asset",
        "Find the measurements that reveal this failure on this equipment",
        "Which sensors can detect this fault in this asset?",
    ],
    "S2FM": [
        "Retrieve the failure modes of the asset that this sensor can detect",
        "Find the faults of this equipment that this measurement reveals",
        "Which failure modes of this asset does this sensor detect?",
    ],
    "C2FM": [
        "Retrieve the failure modes that occur in this component",
        "Find the faults located in this maintainable item",
        "Which failure modes affect this component?",
    ],
    "FM2CMP": [
        "Retrieve the components of the asset where this failure mode occurs",
        "Find the maintainable items affected by this fault of the equipment",
        "Which components of this asset does this failure mode involve?",
    ],
    "FM2CLS": [
        "Retrieve the failure-mechanism class of this failure mode",
        "Classify this fault by its failure mechanism",
        "Which class of failure mechanism does this failure mode belong to?",
    ],
    "E2CAT": [
        "Retrieve the equipment classes of this equipment category",
        "Find the kinds of equipment that belong to this category",
        "Which equipment classes are in this category?",
    ],
    "E2CLT": [
        "Retrieve the equipment types of this equipment class",
        "Find the design types this class of equipment comes in",
        "Which types of this equipment class exist?",
    ],
    "EU2SU": [
        "Retrieve the subunits of this equipment unit",
        "Find the subsystems this equipment is divided into",
        "Which subunits make up this equipment?",
    ],
}

# What each entity of a task's query is (the description prompt says it).
ENTITY_KINDS = {
    "A2S": ["asset"],
    "FM2S": ["asset", "failure mode"],
    "S2FM": ["asset", "sensor"],
    "C2FM": ["component"],
    "FM2CMP": ["asset", "failure mode"],
    "FM2CLS": ["failure mode"],
    "E2CAT": ["equipment category"],
    "E2CLT": ["equipment class"],
    "EU2SU": ["equipment class"],
}

SCHEMA = pa.schema(
    [
        ("task", pa.string()),
        ("query_id", pa.string()),
        ("split", pa.string()),
        ("asset", pa.string()),  # "" where the task has none
        ("entities", pa.list_(pa.string())),  # the query's entities, in order (what augmentation describes)
        ("instruction", pa.string()),
        ("query_text", pa.string()),  # the query without instruction or description
        ("query", pa.string()),  # what the embedder reads
        ("augmented", pa.bool_()),
        ("relevant", pa.list_(pa.string())),
        ("candidates", pa.list_(pa.string())),
        ("provenance", pa.string()),
    ]
)


def load_taxonomy(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """The taxonomy seed: each section a mapping of name -> non-empty list of names."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    for section in ("categories", "types", "subunits", "failure_mode_classes", "components"):
        mapping = data.get(section)
        if not isinstance(mapping, dict) or not mapping:
            raise ValueError(f"{path}: section '{section}' must be a non-empty mapping")
        for key, values in mapping.items():
            if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
                raise ValueError(f"{path}: {section}.{key} must be a non-empty list of names")
    return data


def task_rows(matrix: pd.DataFrame, taxonomy: dict) -> pd.DataFrame:
    """One row per query of every task: task, asset, entities, query text, relevant and candidate items,
    provenance."""
    ticks = matrix[matrix["relevant"]]
    sensors, failure_modes = sorted(matrix["sensor"].unique()), sorted(matrix["failure_mode"].unique())
    components = taxonomy["components"]
    component_of = {fm: sorted(c for c, fms in components.items() if fm in fms) for fm in failure_modes}
    rows = []

    def add(task: str, asset: str, entities: list[str], relevant, candidates, provenance: str) -> None:
        relevant = sorted(set(relevant))
        if relevant:  # a query with nothing to find teaches and tests nothing
            rows.append(
                {
                    "task": task,
                    "asset": asset,
                    "entities": entities,
                    "query_text": query_text(entities),
                    "relevant": relevant,
                    "candidates": list(candidates),
                    "provenance": provenance,
                }
            )

    for asset, cells in ticks.groupby("asset", sort=True):
        add("A2S", asset, [asset], cells["sensor"], sensors, MATRIX_SOURCE)
        for fm, group in cells.groupby("failure_mode", sort=True):
            add("FM2S", asset, [asset, fm], group["sensor"], sensors, MATRIX_SOURCE)
        for sensor, group in cells.groupby("sensor", sort=True):
            add("S2FM", asset, [asset, sensor], group["failure_mode"], failure_modes, MATRIX_SOURCE)
    for asset, cells in matrix.groupby("asset", sort=True):
        for fm in sorted(cells["failure_mode"].unique()):
            add(
                "FM2CMP",
                asset,
                [asset, fm],
                component_of[fm],
                sorted(components),
                f"{MATRIX_SOURCE}; {SEED_SOURCE}",
            )
    for component, fms in components.items():
        add("C2FM", "", [component], fms, failure_modes, SEED_SOURCE)
    mechanism = {fm: cls for cls, fms in taxonomy["failure_mode_classes"].items() for fm in fms}
    for fm, cls in mechanism.items():
        add("FM2CLS", "", [fm], [cls], sorted(taxonomy["failure_mode_classes"]), SEED_SOURCE)
    all_classes = sorted(c for cs in taxonomy["categories"].values() for c in cs)
    for category, classes in taxonomy["categories"].items():
        add("E2CAT", "", [category], classes, all_classes, SEED_SOURCE)
    for section, task in (("types", "E2CLT"), ("subunits", "EU2SU")):
        everything = sorted({v for vs in taxonomy[section].values() for v in vs})
        for cls, values in taxonomy[section].items():
            add(task, "", [cls], values, everything, SEED_SOURCE)
    return pd.DataFrame(rows)


def split_fractions(n: int, fractions: tuple[float, float, float]) -> list[str]:
    """`n` split labels in the given proportions (largest remainders), in train, validation, test order."""
    exact = np.array(fractions) / sum(fractions) * n
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts))[: n - counts.sum()]:
        counts[i] += 1
    return [s for s, c in zip(SPLITS, counts, strict=True) for _ in range(c)]


def assign_splits(rows: pd.DataFrame, fractions: tuple[float, float, float], seed: int) -> pd.DataFrame:
    """Asset tasks: one split of the assets for all of them; the other tasks: their queries at random."""
    rng = np.random.default_rng(seed)
    assets = sorted(a for a in rows["asset"].unique() if a)
    asset_split = dict(zip(rng.permutation(assets), split_fractions(len(assets), fractions), strict=True))
    split = rows["asset"].map(asset_split)
    for _, group in rows[rows["asset"] == ""].groupby("task", sort=True):
        labels = split_fractions(len(group), fractions)
        split[group.index] = [labels[i] for i in rng.permutation(len(group))]
    return rows.assign(split=split)


def add_instructions(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    instructions = [INSTRUCTIONS[t][rng.integers(len(INSTRUCTIONS[t]))] for t in rows["task"]]
    return rows.assign(instruction=instructions)


# --- the query text: the one builder of what the embedder reads -----------------------------------


def query_text(entities: Sequence[str]) -> str:
    """The query's entities as text: "asset: failure mode", or the one entity."""
    return f"{entities[0]}: {entities[1]}" if len(entities) == 2 else entities[0]


def build_query(
    instruction: str, entities: Sequence[str], descriptions: Mapping[str, str] | None = None
) -> str:
    """What the embedder reads: the instruction, the entities and, with `descriptions` (by
    `description_key`, see `description_lookup`), the one-sentence descriptions of those that have one.

    embed_tasks writes every training query with it and the agent's tools (alia.agent.tools) theirs, so
    that a tool asks exactly as the embedder was trained.
    """
    query = f"{instruction}\nQuery: {query_text(entities)}"
    known = [descriptions[key] for e in entities if (key := description_key(e)) in (descriptions or {})]
    return query + ("\n" + " ".join(known) if known else "")


def description_lookup(entities: pd.DataFrame) -> dict[str, str]:
    """embed_tasks' descriptions table (entity, description) by `description_key`; empty and rejected
    ones (alia.embedder.description_quality) left out."""
    if "rejected" in entities:
        entities = entities[entities["rejected"].fillna("") == ""]
    return {
        description_key(e): d for e, d in zip(entities["entity"], entities["description"], strict=True) if d
    }


def augment(
    rows: pd.DataFrame,
    descriptions: Mapping[str, str],
    augment_p: float,
    seed: int,
    eval_augment_p: float | None = None,
) -> pd.DataFrame:
    """Each train query, with probability `augment_p`, gets the descriptions of its entities appended
    (`descriptions` by description_key); each validation and test query with `eval_augment_p` (default:
    `augment_p`). One uniform draw per query decides, so the validation and test queries stay the same
    whatever `augment_p` is."""
    eval_augment_p = augment_p if eval_augment_p is None else eval_augment_p
    for name, p in (("augment_p", augment_p), ("eval_augment_p", eval_augment_p)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} {p}: expected a probability in [0, 1]")
    rng = np.random.default_rng(seed)
    threshold = np.where(rows["split"] == "train", augment_p, eval_augment_p)
    augmented = rng.random(len(rows)) < threshold
    queries = [
        build_query(row.instruction, row.entities, descriptions if extend else None)
        for row, extend in zip(rows.itertuples(), augmented, strict=True)
    ]
    return rows.assign(query=queries, augmented=augmented)


def finish(rows: pd.DataFrame) -> pd.DataFrame:
    """Stable order and ids, the schema's columns."""
    rows = rows.sort_values(["task", "asset", "query_text"], kind="stable").reset_index(drop=True)
    rows["query_id"] = rows["task"] + "-" + rows.groupby("task").cumcount().map("{:04d}".format)
    return rows[SCHEMA.names]


def to_table(rows: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(rows[SCHEMA.names], schema=SCHEMA, preserve_index=False)


# --- entity descriptions for query augmentation ------------------------------------------------


def description_key(name: str) -> str:
    """How a name is looked up: case, underscores, slashes and spacing do not matter."""
    return " ".join(re.sub(r"[_/]", " ", name).split()).casefold()


def query_entities(rows: pd.DataFrame) -> pd.DataFrame:
    """Every distinct entity of the queries with its kind (the first kind it appears as)."""
    pairs = [
        (e, k)
        for t, es in zip(rows["task"], rows["entities"], strict=True)
        for e, k in zip(es, ENTITY_KINDS[t], strict=True)
    ]
    return pd.DataFrame(pairs, columns=["entity", "kind"]).drop_duplicates("entity").reset_index(drop=True)


def seed_descriptions(descriptions_dir: str | Path) -> dict[str, str]:
    """The shared one-sentence descriptions (assets, sensors, classes, categories, faults) by name key."""
    import json

    root = Path(descriptions_dir)
    seeds: dict[str, str] = {}
    assets = yaml.safe_load((root / "assets.yaml").read_text(encoding="utf-8"))["industrial_assets"]
    for group in assets.values():
        for entry in group.get("assets", []):
            seeds |= {description_key(name): text for name, text in entry.items()}
    sensors = yaml.safe_load((root / "sensors.yaml").read_text(encoding="utf-8"))["sensors"]
    seeds |= {description_key(name): text for name, text in sensors.items()}
    other = json.loads((root / "other_descs.json").read_text(encoding="utf-8"))
    for section in ("eq_cat", "eq_class", "fault"):  # "component" describes classes again
        seeds |= {description_key(name): text for name, text in other[section].items()}
    return seeds


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def describe_entities(
    rows: pd.DataFrame, descriptions_dir: str | Path, teacher: LLMClient, prompt: Prompt
) -> pd.DataFrame:
    """Every query entity with one sentence: the shared description where one exists, the teacher's
    (`prompt`) first sentence otherwise (source "shared", "teacher", or "none" where the teacher
    failed), with the teacher's provenance columns."""
    from alia.llm.ask import ask_rows

    entities = query_entities(rows)
    seeds = seed_descriptions(descriptions_dir)
    entities["description"] = entities["entity"].map(lambda e: seeds.get(description_key(e), ""))
    entities["source"] = entities["description"].map(lambda d: "shared" if d else "teacher")
    missing = entities[entities["source"] == "teacher"]
    asked, texts = ask_rows(teacher, prompt, missing[["entity", "kind"]], "describe")
    entities.loc[missing.index, "description"] = [first_sentence(t) if t else "" for t in texts]
    entities.loc[missing.index[[not t for t in texts]], "source"] = "none"  # no augmentation for these
    return entities.merge(asked.drop(columns=["kind", "text"]), on="entity", how="left")
