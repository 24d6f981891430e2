"""Multiple-choice questions in the FailureSensorIQ format: the published dataset or a local JSONL file.

The published dataset is `ibm-research/FailureSensorIQ` on the Hugging Face hub (Apache-2.0).
A source is a local .jsonl path, or `hub` / `hub:<config>` for the published file of that config,
downloaded (and cached) with huggingface_hub wherever the hub is reachable; HF_HUB_OFFLINE=1 reads
a previously cached copy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from alia.core.io import TableError, read_text

HUB_DATASET = "ibm-research/FailureSensorIQ"
# config name -> file in the dataset repository (from the dataset card's `configs`)
HUB_FILES = {
    "single_true_multi_choice_qa": "failuresensoriq_standard/all.jsonl",
    "multi_true_multi_choice_qa": "failuresensoriq_standard/all_multi_answers.jsonl",
}
# the published perturbed file (SimplePert: fmsr_filtered_perturbed_data_all_simple.jsonl) has no
# relevancy, asset_name or question_type: "" there, so its questions count in Acc_All only
REQUIRED_FIELDS = ("question", "options", "correct")
# the published multi-correct file has no asset_name: "" there
COLUMNS = ["id", "question", "options", "option_ids", "correct", "asset_name", "relevancy", "question_type"]


def resolve_mcqa_source(source: str, revision: str | None = None) -> Path:
    """A local file for `source`, downloading the published file for `hub[:<config>]`."""
    if source == "hub" or source.startswith("hub:"):
        config = source.partition(":")[2] or "single_true_multi_choice_qa"
        if config not in HUB_FILES:
            raise ValueError(
                f"unknown FailureSensorIQ config {config!r}: expected one of {sorted(HUB_FILES)}"
            )
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(HUB_DATASET, HUB_FILES[config], repo_type="dataset", revision=revision))
    return Path(source)


def load_mcqa(source: str, revision: str | None = None) -> pd.DataFrame:
    """Questions as a DataFrame; a malformed record stops with its file, line and field."""
    path = resolve_mcqa_source(source, revision)
    rows = []
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise TableError(path, f"invalid JSON: {err.msg}", row=line_no) from None
        rows.append(_validate(record, path, line_no))
    if not rows:
        raise TableError(path, "empty file: expected one question per line")
    return pd.DataFrame(rows, columns=COLUMNS)


def _validate(record: dict, path: Path, line_no: int) -> dict:
    for field in REQUIRED_FIELDS:
        if field not in record:
            raise TableError(path, f"missing field '{field}'", row=line_no, column=field)
    options, correct = record["options"], record["correct"]
    if (
        not isinstance(options, list)
        or len(options) < 2
        or not all(isinstance(o, str) and o for o in options)
    ):
        raise TableError(
            path, "expected a list of at least 2 non-empty options", row=line_no, column="options"
        )
    if (
        not isinstance(correct, list)
        or len(correct) != len(options)
        or not all(isinstance(c, bool) for c in correct)
    ):
        raise TableError(
            path, f"expected {len(options)} booleans, one per option", row=line_no, column="correct"
        )
    if not any(correct):
        raise TableError(path, "no option is marked correct", row=line_no, column="correct")
    option_ids = record.get("option_ids") or list("ABCDEFGHIJ"[: len(options)])
    if len(option_ids) != len(options) or len(set(option_ids)) != len(options):
        raise TableError(
            path, f"expected {len(options)} distinct labels, one per option", row=line_no, column="option_ids"
        )
    return {
        "id": record.get("id", line_no - 1),
        "question": record["question"],
        "options": options,
        # labels as published ("A", "B", ...); the perturbed files use "P)", "Q)", ...: the letter only
        "option_ids": [str(i).strip().rstrip(").") for i in option_ids],
        "correct": correct,
        "asset_name": record.get("asset_name", ""),
        "relevancy": record.get("relevancy", ""),
        "question_type": record.get("question_type", ""),
    }
