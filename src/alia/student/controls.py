"""Positive controls: corpora written by a template from the D_eval tick matrix itself.

A deliberate leak, and never a result. A student trained on them shows whether training and
scoring can see learning at all on this machine:
- `control_text`: plain sentences, one per failure mode and one per sensor of each asset (as
  KD_Base is text): how much plain-text knowledge reaches the question format;
- `control_qa`: question-answer records (as KD_QA is), one per tick and direction, asked as D_eval
  asks and answered as its scorer reads an answer.
No teacher writes them, so they cost nothing and change only when the matrix does.
"""

from __future__ import annotations

import pandas as pd

from alia.kd.corpora import doc_id
from alia.student.formats import INSTRUCTION, cloze_text
from alia.student.questions import DIRECTIONS, TEMPLATES, anchor_rows, render, with_article


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
    """Question-answer records in D_eval's own wording and scoring format: for every tick, in each
    direction, a selection question about it (D_eval's templates in turn) answered by the ticked
    option as D_eval spells it.

    The format is the log-likelihood scorer's prompt (instruction, "Question: ...", "Answer:"), so
    that the control tests learning, not format transfer: records that list the relevant sensors in
    their own words ("Which sensors are relevant for ...? Vibration, ...") were memorised (training
    loss 4.7 -> 0.8) and still raised no D_eval scorer (docs/student.md).
    """
    rows = []
    for direction in DIRECTIONS:
        templates = TEMPLATES[direction, "selection"]
        for asset, anchor, subject, option, relevant, _ in anchor_rows(matrix, direction):
            for i, answer in enumerate(relevant):
                question = render(templates[i % len(templates)], asset, **{anchor: subject, option: answer})
                rows.append(
                    {
                        "doc_id": doc_id("control_qa", direction, asset, subject, answer),
                        "asset": asset,
                        "question": f"{INSTRUCTION}\n{cloze_text(question)}",
                        "answer": answer,
                        "context": "",
                    }
                )
    return pd.DataFrame(rows)
