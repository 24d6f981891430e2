"""The LLM judge of KD passages, optional (params `judge`): each passage's faithfulness to its facts
and its fluency, 1-5, with a reason (prompts/judge_passage.yaml), asked of the stage's own client, so
cached, counted and retried like every other call. alia.kd.faithfulness.FactFilter runs it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alia.core.params import load_params
from alia.kd.faithfulness import FactFilter, load_checker
from alia.llm.ask import ask_rows
from alia.llm.client import LLMClient
from alia.llm.prompts import load_prompt


class Judge:
    """Scores each passage's faithfulness to its facts and its fluency, 1-5, with a reason
    (prompts/judge_passage.yaml), through the stage's own client: cached, counted, retried."""

    def __init__(self, teacher: LLMClient, request: dict[str, Any] | None = None):
        self.teacher, self.prompt, self.request = teacher, load_prompt("judge_passage"), request

    def __call__(self, passages: pd.DataFrame, texts: Sequence[str]) -> pd.DataFrame:
        requests = pd.DataFrame(
            {
                "equipment_class": passages["equipment_class"].to_numpy(),
                "facts": [[" and ".join(labels) for labels in facts] for facts in passages["fact_entities"]],
                "passage": list(texts),
            }
        )
        _, parsed = ask_rows(self.teacher, self.prompt, requests, "judge", request=self.request)
        out = passages.copy()
        out["judge_faithfulness"] = [float(p.faithfulness) if p else np.nan for p in parsed]
        out["judge_fluency"] = [float(p.fluency) if p else np.nan for p in parsed]
        out["judge_reason"] = [p.reason if p else "" for p in parsed]
        return out


def stage_judge(teacher: LLMClient) -> Judge | None:
    """The judge of a KD stage whose teacher is `teacher`, or None where params' judge.enabled is false."""
    params = load_params("judge")
    return Judge(teacher, params["request"]) if params["enabled"] else None


def stage_checks(
    tables_dir: Path, rules_file: Path, relevance_dir: Path, filters: dict, rejects: Path, teacher: LLMClient
) -> FactFilter:
    """A KD stage's checks of what its `teacher` wrote: the facts (alia.kd.faithfulness), its `filters`
    with their `rejects` file, and the judge where it is enabled."""
    return FactFilter(
        load_checker(tables_dir, rules_file, relevance_dir), filters, rejects, stage_judge(teacher)
    )
