"""Phase I of knowledge generation: what the teacher knows about each D_source equipment class.

Step 1, sensor discovery: ask which sensors can monitor an equipment class, parse the numbered
list, canonicalise the names against the vocabulary (unknown sensors become new entries) and add
`monitored_by` edges with provenance `llm` to the knowledge graph.
"""

from __future__ import annotations

import pandas as pd

from alia.kg import KnowledgeGraph, node_id
from alia.prompts import Prompt
from alia.teacher import Teacher
from alia.vocabulary import Canonicaliser

ANSWER_COLUMNS = [
    "equipment_class",
    "ok",
    "error",
    "text",
    "attempts",
    "prompt",
    "prompt_hash",
    "teacher_model",
    "cache_key",
    "prompt_tokens",
    "completion_tokens",
]
SENSOR_COLUMNS = ["equipment_class", "rank", "sensor", "sensor_raw", "in_vocabulary", "cache_key"]


def discover_sensors(
    teacher: Teacher,
    prompt: Prompt,
    classes: list[str],
    rules: Canonicaliser,
    known_sensors: set[str],
    max_sensors: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(answers: one row per class, failures included with their raw text; sensors: one row per
    canonical sensor name per class, in the teacher's order)."""
    answers = teacher.ask(
        [prompt.messages(asset=cls, max_sensors=max_sensors) for cls in classes],
        parser=prompt.parser(),
        desc="sensor discovery",
    )
    answer_rows, sensor_rows = [], []
    for cls, answer in zip(classes, answers, strict=True):
        answer_rows.append(
            [
                cls,
                answer.ok,
                answer.error or "",
                answer.text,
                answer.attempts,
                prompt.name,
                prompt.hash,
                teacher.config.model,
                answer.cache_key,
                answer.prompt_tokens,
                answer.completion_tokens,
            ]
        )
        if not answer.ok:
            continue
        raw_of: dict[str, str] = {}  # canonical name -> the teacher's first spelling of it
        for raw in answer.parsed[:max_sensors]:
            for name in rules.names(raw):
                raw_of.setdefault(name, raw)
        for rank, (name, raw) in enumerate(raw_of.items(), start=1):
            sensor_rows.append([cls, rank, name, raw, name in known_sensors, answer.cache_key])
    return pd.DataFrame(answer_rows, columns=ANSWER_COLUMNS), pd.DataFrame(
        sensor_rows, columns=SENSOR_COLUMNS
    )


def add_discovered_sensors(kg: KnowledgeGraph, sensors: pd.DataFrame, prompt: Prompt) -> int:
    """Add the discovered sensors and their `monitored_by` edges; return how many edges were new."""
    added = 0
    for row in sensors.itertuples():
        sensor = kg.add_node("sensor", row.sensor, "llm", prompt.name, prompt_hash=prompt.hash)
        cls = node_id("equipment_class", row.equipment_class)
        added += kg.add_edge(cls, sensor, "monitored_by", "llm", prompt.name, cache_key=row.cache_key)
    return added
