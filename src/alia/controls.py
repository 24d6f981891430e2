"""Positive controls: corpora written by a template from the D_eval tick matrix itself.

A deliberate leak, and never a result. A student trained on them shows whether training and
scoring can see learning at all on this machine:
- `control_text`: plain sentences, one per failure mode and one per sensor of each asset (as
  KD_Base is text): how much plain-text knowledge reaches the question format;
- `control_qa`: question-answer records (as KD_QA is), which sensors do and do not reveal each
  failure mode, and which failure modes each sensor does and does not reveal.
No teacher writes them, so they cost nothing and change only when the matrix does.
"""

from __future__ import annotations

import pandas as pd

from alia.corpora import doc_id
from alia.mcqa import DIRECTIONS, anchor_rows, with_article


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _facts(matrix: pd.DataFrame):
    """(asset, direction, anchor, relevant options, irrelevant options) per failure mode and sensor."""
    for direction in DIRECTIONS:
        for asset, _, subject, _, relevant, irrelevant in anchor_rows(matrix, direction):
            yield asset, direction, subject, relevant, irrelevant


def control_text(matrix: pd.DataFrame) -> pd.DataFrame:
    """One document (a sentence or two) per asset and failure mode, and per asset and sensor."""
    rows = []
    for asset, direction, subject, relevant, irrelevant in _facts(matrix):
        a_asset = with_article(asset)
        if direction == "fm2sensor":
            text = f"In {a_asset}, {subject} can be detected by monitoring {_listing(relevant)}."
            if irrelevant:
                text += f" {_listing(irrelevant).capitalize()} do not reveal {subject} in {a_asset}."
        else:
            text = f"On {a_asset}, {subject} reveals {_listing(relevant)}." if relevant else ""
            if irrelevant:
                text += f" {subject.capitalize()} does not reveal {_listing(irrelevant)} on {a_asset}."
        rows.append({"doc_id": doc_id("control_text", asset, subject), "asset": asset, "text": text.strip()})
    return pd.DataFrame(rows)


def control_qa(matrix: pd.DataFrame) -> pd.DataFrame:
    """Question-answer records: for each failure mode (sensor) of each asset, which sensors (failure
    modes) are relevant, and which are not."""
    rows = []
    for asset, direction, subject, relevant, irrelevant in _facts(matrix):
        a_asset = with_article(asset)
        if direction == "fm2sensor":
            asks = (
                (f"Which sensors are relevant for detecting {subject} in {a_asset}?", relevant),
                (f"Which sensors are NOT relevant for detecting {subject} in {a_asset}?", irrelevant),
            )
        else:
            asks = (
                (f"Which failure modes of {a_asset} can be detected with {subject}?", relevant),
                (f"Which failure modes of {a_asset} can NOT be detected with {subject}?", irrelevant),
            )
        for question, answer in asks:
            if answer:
                rows.append(
                    {
                        "doc_id": doc_id("control_qa", question),
                        "asset": asset,
                        "question": question,
                        "answer": _listing(answer).capitalize() + ".",
                        "context": "",
                    }
                )
    return pd.DataFrame(rows)
