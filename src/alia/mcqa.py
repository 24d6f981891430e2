"""D_eval: multiple-choice questions about the ISO 17359 assets, in the FailureSensorIQ style.

Every question has one correct option. It asks about one asset in one direction, failure mode ->
sensor ("which sensor detects <failure mode>?") or sensor -> failure mode ("which failure mode does
<sensor> reveal?"), in one form: selection (the one relevant option among irrelevant ones) or
elimination (the one irrelevant option among relevant ones). The ISO 17359 tick matrix is the answer key.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from alia.failuresensoriq import load_mcqa
from alia.tables import asset_key

DIRECTIONS = ("fm2sensor", "sensor2fm")
FORMS = ("selection", "elimination")
LETTERS = "ABCDEFGHIJ"

# The FailureSensorIQ `relevancy` label of each direction and form.
RELEVANCY = {
    ("fm2sensor", "selection"): "relevant_sensor_for_failure_mode",
    ("fm2sensor", "elimination"): "irrelevant_sensor_for_failure_mode",
    ("sensor2fm", "selection"): "relevant_failure_mode_for_sensor",
    ("sensor2fm", "elimination"): "irrelevant_failure_mode_for_sensor",
}

# Several wordings per direction and form, so that a model cannot key on one sentence.
TEMPLATES = {
    ("fm2sensor", "selection"): [
        "Which sensor is relevant for detecting {subject} in {a_asset}?",
        "A reliability engineer wants to detect {subject} on {a_asset}. Which measurement should be watched?",
        "For {a_asset}, which of these signals would reveal {subject}?",
        "Which condition-monitoring measurement is most useful to detect {subject} in {a_asset}?",
    ],
    ("fm2sensor", "elimination"): [
        "Which sensor is NOT relevant for detecting {subject} in {a_asset}?",
        "A reliability engineer wants to detect {subject} on {a_asset}. Which measurement would NOT help?",
        "For {a_asset}, which of these signals would NOT reveal {subject}?",
        "Which measurement is least useful to detect {subject} in {a_asset}?",
    ],
    ("sensor2fm", "selection"): [
        "Which failure mode of {a_asset} can be detected with {subject}?",
        "{A_asset} is monitored through {subject}. Which failure mode can this measurement reveal?",
        "Monitoring {subject} on {a_asset} is most useful to detect which failure mode?",
        "Which {asset} failure mode shows up in {subject}?",
    ],
    ("sensor2fm", "elimination"): [
        "Which failure mode of {a_asset} can NOT be detected with {subject}?",
        "{A_asset} is monitored through {subject}. Which failure mode would this measurement NOT reveal?",
        "Monitoring {subject} on {a_asset} does NOT help to detect which failure mode?",
        "Which {asset} failure mode does NOT show up in {subject}?",
    ],
}

# The stable schema of every question set (D_eval, the expert set, the published files).
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("options", pa.list_(pa.string())),
        ("correct", pa.list_(pa.bool_())),
        ("answer_index", pa.int64()),
        ("asset_name", pa.string()),
        ("direction", pa.string()),
        ("form", pa.string()),
        ("relevancy", pa.string()),
        ("question_type", pa.string()),
        ("subject", pa.string()),
        ("template", pa.int64()),
    ]
)


def build_questions(
    matrix: pd.DataFrame,
    questions_per_cell: int,
    min_options: int = 2,
    max_options: int = 5,
    seed: int = 0,
    source_assets: list[str] | None = None,
) -> pd.DataFrame:
    """`questions_per_cell` questions per asset, direction and form from the tick matrix.

    `matrix` has one row per (asset, failure_mode, sensor) with a boolean `relevant`. The number of
    options is drawn from [min_options, max_options] and lowered where an asset has too few
    candidates; each subject (failure mode or sensor) is asked about at most once per cell.
    `source_assets` (D_source) must share no asset with the matrix.
    """
    if not 2 <= min_options <= max_options <= len(LETTERS):
        raise ValueError(f"expected 2 <= min_options <= max_options <= {len(LETTERS)}")
    if source_assets is not None:
        shared = {asset_key(a) for a in matrix["asset"]} & {asset_key(a) for a in source_assets}
        if shared:
            raise ValueError(f"D_eval questions would ask about D_source assets: {sorted(shared)}")
    rng = np.random.default_rng(seed)
    rows = []
    for asset, cells in matrix.groupby("asset", sort=True):
        for direction in DIRECTIONS:
            subject_col, option_col = (
                ("failure_mode", "sensor") if direction == "fm2sensor" else ("sensor", "failure_mode")
            )
            by_subject = {
                subject: (
                    sorted(group.loc[group["relevant"], option_col]),
                    sorted(group.loc[~group["relevant"], option_col]),
                )
                for subject, group in cells.groupby(subject_col, sort=True)
            }
            for form in FORMS:
                rows += _cell_questions(
                    asset, direction, form, by_subject, questions_per_cell, min_options, max_options, rng
                )
    questions = pd.DataFrame(rows)
    questions.insert(0, "id", [f"deval-{i:04d}" for i in range(len(questions))])
    return questions[SCHEMA.names]


def _cell_questions(
    asset: str,
    direction: str,
    form: str,
    by_subject: dict[str, tuple[list[str], list[str]]],
    count: int,
    min_options: int,
    max_options: int,
    rng: np.random.Generator,
) -> list[dict]:
    rows = []
    subjects = list(by_subject)
    for i in rng.permutation(len(subjects)):
        if len(rows) == count:
            break
        relevant, irrelevant = by_subject[subjects[i]]
        answers, distractors = (relevant, irrelevant) if form == "selection" else (irrelevant, relevant)
        n_options = min(int(rng.integers(min_options, max_options + 1)), len(distractors) + 1)
        if not answers or n_options < min_options:
            continue  # this subject cannot make a question of this form
        answer = answers[rng.integers(len(answers))]
        options = [answer] + [distractors[j] for j in rng.choice(len(distractors), n_options - 1, False)]
        order = rng.permutation(n_options)
        options = [options[j] for j in order]
        template = int(rng.integers(len(TEMPLATES[direction, form])))
        rows.append(
            {
                "question": _render(TEMPLATES[direction, form][template], subjects[i], asset),
                "options": options,
                "correct": [o == answer for o in options],
                "answer_index": options.index(answer),
                "asset_name": asset,
                "direction": direction,
                "form": form,
                "relevancy": RELEVANCY[direction, form],
                "question_type": "mcp1_positive" if form == "selection" else "mcp1_negative",
                "subject": subjects[i],
                "template": template,
            }
        )
    return rows


def _render(template: str, subject: str, asset: str) -> str:
    name = asset.lower()
    a_asset = ("an " if name[0] in "aeiou" else "a ") + name
    return template.format(subject=subject, asset=name, a_asset=a_asset, A_asset=a_asset.capitalize())


def load_question_set(source: str) -> pd.DataFrame:
    """A published or local FailureSensorIQ file in the D_eval schema (direction and form from
    `relevancy` where it names them, "other" where it does not)."""
    questions = load_mcqa(source)
    questions = questions[questions["answer_index"] >= 0]  # single-correct questions only
    relevancy = questions["relevancy"].astype(str)
    questions = questions.assign(
        id=questions["id"].astype(str),
        direction=np.select(
            [
                relevancy.str.endswith("sensor_for_failure_mode"),
                relevancy.str.endswith("failure_mode_for_sensor"),
            ],
            ["fm2sensor", "sensor2fm"],
            "other",
        ),
        form=np.where(relevancy.str.startswith("irrelevant"), "elimination", "selection"),
        subject="",
        template=-1,
    )
    return questions[SCHEMA.names].reset_index(drop=True)


def to_table(questions: pd.DataFrame) -> pa.Table:
    """Questions as an Arrow table with the stable schema (a missing or mistyped column fails here)."""
    return pa.Table.from_pandas(questions[SCHEMA.names], schema=SCHEMA, preserve_index=False)
