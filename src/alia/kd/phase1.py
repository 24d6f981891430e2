"""Phase I of knowledge generation: what the teacher knows about each D_source equipment class.

Step 1, sensor discovery: ask which sensors can monitor an equipment class, parse the numbered
list, canonicalise the names against the vocabulary (unknown sensors become new entries).
Step 2, relevance check: for each (class, failure mode, sensor) ask whether the sensor helps detect
the failure mode (yes/no + reason).
Both are facts tables; stage kg turns them into `monitored_by` and `relevant_to` edges (alia.data.kg.build).
"""

from __future__ import annotations

import pandas as pd

from alia.data.vocabulary import Canonicaliser
from alia.llm.ask import ask_rows
from alia.llm.client import LLMClient
from alia.llm.prompts import Prompt

SENSOR_COLUMNS = ["equipment_class", "rank", "sensor", "sensor_raw", "in_vocabulary", "cache_key"]


def discover_sensors(
    teacher: LLMClient,
    prompt: Prompt,
    classes: list[str],
    rules: Canonicaliser,
    known_sensors: set[str],
    max_sensors: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(answers: one row per class, failures included with their raw text; sensors: one row per
    canonical sensor name per class, in the teacher's order)."""
    requests = pd.DataFrame({"equipment_class": classes, "max_sensors": max_sensors})
    answers, parsed = ask_rows(teacher, prompt, requests, "sensor discovery")
    rows = []
    for cls, key, listed in zip(answers["equipment_class"], answers["cache_key"], parsed, strict=True):
        raw_of: dict[str, str] = {}  # canonical name -> the teacher's first spelling of it
        for raw in (listed or [])[:max_sensors]:
            for name in rules.names(raw):
                raw_of.setdefault(name, raw)
        for rank, (name, raw) in enumerate(raw_of.items(), start=1):
            rows.append([cls, rank, name, raw, name in known_sensors, key])
    return answers, pd.DataFrame(rows, columns=SENSOR_COLUMNS)


def relevance_requests(
    class_failure_modes: pd.DataFrame,
    sensors: pd.DataFrame,
    failure_modes_per_class: int,
    sensors_per_class: int,
) -> pd.DataFrame:
    """(equipment_class, failure_mode, sensor) for the first failure modes and top-ranked sensors of each
    class."""
    fms = class_failure_modes.groupby("equipment_class", sort=False).head(failure_modes_per_class)
    top = sensors[sensors["rank"] <= sensors_per_class]
    requests = fms.merge(top[["equipment_class", "sensor"]], on="equipment_class")
    return requests[["equipment_class", "failure_mode", "sensor"]]


def check_relevance(teacher: LLMClient, prompt: Prompt, requests: pd.DataFrame) -> pd.DataFrame:
    """The requests with the teacher's label (`relevant`, None where the answer never parsed) and reason."""
    answers, parsed = ask_rows(teacher, prompt, requests, "relevance check")
    answers.insert(3, "relevant", pd.array([p.answer if p else None for p in parsed], dtype="boolean"))
    answers.insert(4, "reason", [p.reason if p else "" for p in parsed])
    return answers


def extend_vocabulary(vocabulary: pd.DataFrame, sensors: pd.DataFrame, prompt: Prompt) -> pd.DataFrame:
    """The vocabulary with the teacher's new sensors added (same schema as the tables' vocabulary):
    one row per (new canonical name, spelling the teacher used), the prompt as its source."""
    new = sensors.loc[~sensors["in_vocabulary"], ["sensor", "sensor_raw"]].drop_duplicates()
    added = pd.DataFrame(
        {
            "kind": "sensor",
            "name": new["sensor"].to_numpy(),
            "label": new["sensor"].to_numpy(),
            "alias": new["sensor_raw"].to_numpy(),
            "source_files": f"llm:{prompt.name}",
        }
    )
    return pd.concat([vocabulary, added], ignore_index=True)
