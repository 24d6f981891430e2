"""Asking the teacher over a table: one prompt per row, one answer per row, with provenance.

Every generated row carries where it came from: the prompt's name and file hash, the teacher
model, the response-cache key (which finds the exact request and answer again), token counts,
how the answer ended, how many asks it took, and, for an answer that never parsed, the error and
raw text. Nothing is dropped here; filters downstream count what they remove.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from alia.llm.client import LLMClient
from alia.llm.prompts import Prompt

# Rows asked and written at a time by a stage that streams its corpus: large enough that the endpoint
# stays busy (a chunk's last answers wait for its slowest), small enough to hold in memory
CHUNK_SIZE = 4096
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
    teacher: LLMClient,
    prompt: Prompt,
    requests: pd.DataFrame,
    desc: str,
    progress: tqdm | None = None,
    request: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, list[Any]]:
    """`requests` with the provenance columns added, and each row's parsed answer (None where it failed).

    The template variables of row i are requests' columns in row i; `request`: further request fields
    (max_tokens, temperature) for these prompts, as LLMClient.ask takes them.
    """
    answers = teacher.ask(
        [prompt.messages(**row) for row in requests.to_dict("records")],
        parser=prompt.parser(),
        desc=desc,
        schema=prompt.schema(),
        progress=progress,
        request=request,
    )
    out = requests.reset_index(drop=True).copy()
    same_for_all = {"prompt": prompt.name, "prompt_hash": prompt.hash, "teacher_model": teacher.config.model}
    for column in PROVENANCE_COLUMNS:
        out[column] = (
            same_for_all[column] if column in same_for_all else [getattr(a, column) for a in answers]
        )
    out["error"] = out["error"].fillna("")
    return out, [a.parsed if a.ok else None for a in answers]


def ask_rows_in_chunks(
    teacher: LLMClient, prompt: Prompt, requests: pd.DataFrame, desc: str, chunk_size: int = CHUNK_SIZE
) -> Iterator[tuple[pd.DataFrame, list[Any]]]:
    """`ask_rows`, `chunk_size` rows at a time under one progress bar: a stage writes each chunk's
    answers as they come, and holds no more than one chunk of a paper-scale corpus. Always yields at
    least one (maybe empty) chunk, so that the output file exists."""
    if teacher.config.batch.enabled:  # every chunk's prompts in batches first, not a chunk at a time
        teacher.answer_in_batches(
            [prompt.messages(**row) for row in requests.to_dict("records")], prompt.schema()
        )
    with tqdm(total=len(requests), desc=desc, unit="prompt", dynamic_ncols=True) as progress:
        for start in range(0, max(len(requests), 1), chunk_size):
            yield ask_rows(teacher, prompt, requests.iloc[start : start + chunk_size], desc, progress)


# --- the teacher of a stage --------------------------------------------------------------------
