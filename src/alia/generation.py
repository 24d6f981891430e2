"""Asking the teacher over a table: one prompt per row, one answer per row, with provenance.

Every generated row carries where it came from: the prompt's name and file hash, the teacher
model, the response-cache key (which finds the exact request and answer again), token counts,
how the answer ended, how many asks it took, and, for an answer that never parsed, the error and
raw text. Nothing is dropped here; filters downstream count what they remove.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from alia.params import load_params
from alia.prompts import Prompt
from alia.teacher import Teacher, TeacherConfig
from alia.tracking import start_run

PROVENANCE_COLUMNS = [
    "prompt",
    "prompt_hash",
    "teacher_model",
    "cache_key",
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
    "attempts",
    "ok",
    "error",
    "text",
]


def ask_rows(
    teacher: Teacher, prompt: Prompt, items: pd.DataFrame, desc: str
) -> tuple[pd.DataFrame, list[Any]]:
    """`items` with the provenance columns added, and each row's parsed answer (None where it failed).

    The template variables of row i are items' columns in row i.
    """
    answers = teacher.ask(
        [prompt.messages(**row) for row in items.to_dict("records")],
        parser=prompt.parser(),
        desc=desc,
        schema=prompt.schema(),
    )
    out = items.reset_index(drop=True).copy()
    same_for_all = {"prompt": prompt.name, "prompt_hash": prompt.hash, "teacher_model": teacher.config.model}
    for column in PROVENANCE_COLUMNS:
        out[column] = (
            same_for_all[column] if column in same_for_all else [getattr(a, column) for a in answers]
        )
    out["error"] = out["error"].fillna("")
    return out, [a.parsed if a.ok else None for a in answers]


# --- what every teacher-backed stage does around its own work -------------------------------

SERVER_LOG = "logs/teacher_server.log"


def stage_teacher(params: dict[str, Any]) -> Teacher:
    """The teacher of a stage: params.yaml `teacher:`, overridden by the stage's own `teacher:`
    keys (say, a shorter max_tokens), answering from and into the stage's `cache`."""
    base, overrides = load_params("teacher"), params.get("teacher", {})
    config = base | overrides
    if "local" in overrides:  # a stage may change one setting of the local server (n_ctx, say)
        config["local"] = base.get("local", {}) | overrides["local"]
    return Teacher(TeacherConfig(**config), params["cache"], server_log=SERVER_LOG)


def finish_stage(
    stage: str, params: dict[str, Any], teacher: Teacher, metrics: dict, metrics_file: str
) -> None:
    """Write the stage's metrics (its own counts plus the teacher's) and log them to MLflow."""
    import mlflow  # imported here: it takes seconds, and only the end of a stage needs it

    metrics = {**metrics, "teacher": teacher.metrics()}
    Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics_file).write_text(json.dumps(metrics, indent=2) + "\n")
    with start_run(stage, params={stage: params, "teacher": teacher.config.model_dump()}):
        mlflow.log_metrics({k: v for k, v in metrics.items() if not isinstance(v, dict)})
        mlflow.log_metrics({f"teacher.{k}": v for k, v in metrics["teacher"].items()})
    print(json.dumps(metrics))
