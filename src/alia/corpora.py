"""Knowledge corpora (KD_*): building the items a teacher writes about, and cleaning what it wrote.

Every corpus goes through the same filters, in order, and reports how many passages each removed:
failed answers, empty answers, truncated answers (the teacher hit max_tokens), exact duplicates
(after case and whitespace normalisation) and near duplicates (MinHash LSH over word shingles).
"""

from __future__ import annotations

import hashlib
import re

import pandas as pd
from datasketch import MinHash, MinHashLSH

from alia.vocabulary import LABEL_SEPARATOR

RELATIONS = ("asset_sensor", "asset_failure_mode", "asset_sensor_failure_mode")


def doc_id(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _chunks(values: list[str], size: int) -> list[list[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def knowledge_items(
    classes: list[str],
    class_failure_modes: pd.DataFrame,
    sensors: pd.DataFrame,
    relevance: pd.DataFrame,
    failure_modes_per_class: int,
    sensors_per_class: int,
    facts_per_document: int,
) -> pd.DataFrame:
    """One row per document to write: (doc_id, asset, relation, facts), `facts_per_document` facts each.

    asset_sensor: the class's top sensors; asset_failure_mode: its first failure modes;
    asset_sensor_failure_mode: the (sensor, failure mode) pairs the relevance check said yes to.
    """
    rows = []
    for cls in classes:
        fms = class_failure_modes.loc[class_failure_modes["equipment_class"] == cls, "failure_mode"]
        top = sensors[(sensors["equipment_class"] == cls) & (sensors["rank"] <= sensors_per_class)]
        yes = relevance[(relevance["equipment_class"] == cls) & relevance["relevant"].fillna(False)]
        facts = {
            "asset_sensor": top["sensor"].tolist(),
            "asset_failure_mode": fms.head(failure_modes_per_class)
            .str.replace(LABEL_SEPARATOR, " or ")
            .tolist(),
            "asset_sensor_failure_mode": [
                f"{r.sensor} helps detect {r.failure_mode}" for r in yes.itertuples()
            ],
        }
        for relation in RELATIONS:
            for chunk in _chunks(facts[relation], facts_per_document):
                rows.append([doc_id("kd_base", cls, relation, *chunk), cls, relation, chunk])
    return pd.DataFrame(rows, columns=["doc_id", "asset", "relation", "facts"])


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def _shingles(text: str, size: int) -> set[str]:
    words = re.findall(r"\w+", text.casefold())
    return {" ".join(words[i : i + size]) for i in range(max(1, len(words) - size + 1))}


def filter_passages(
    passages: pd.DataFrame, near_duplicate_threshold: float = 0.85, shingle_size: int = 5, num_perm: int = 128
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The passages that survive every filter (first occurrence kept), and each filter's count."""
    counts = {"input": len(passages)}
    kept = passages
    for name, condition in (
        ("failed", lambda df: ~df["ok"].astype(bool)),
        ("empty", lambda df: df["text"].str.strip() == ""),
        ("truncated", lambda df: df["finish_reason"] == "length"),  # the teacher hit max_tokens
        ("exact_duplicates", lambda df: df["text"].map(_normalised).duplicated()),
    ):
        drop = condition(kept)
        counts[name] = int(drop.sum())
        kept = kept[~drop]

    lsh = MinHashLSH(threshold=near_duplicate_threshold, num_perm=num_perm)
    near = []
    for index, text in kept["text"].items():
        signature = MinHash(num_perm=num_perm)
        for shingle in _shingles(text, shingle_size):
            signature.update(shingle.encode())
        is_near = bool(lsh.query(signature))
        near.append(is_near)
        if not is_near:
            lsh.insert(str(index), signature)
    near = pd.Series(near, index=kept.index, dtype=bool)
    counts["near_duplicates"] = int(near.sum())
    kept = kept[~near].reset_index(drop=True)
    counts["kept"] = len(kept)
    return kept, counts
