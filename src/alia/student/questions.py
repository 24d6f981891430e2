"""D_eval: multiple-choice questions about the ISO 17359 assets, built as FailureSensorIQ is.

The ISO 17359 tick matrix is the answer key, and every question comes from one of its cells
(asset, failure mode, sensor), in one direction (failure mode -> sensor, or sensor -> failure mode):
- a tick makes a selection question: its option is the one relevant among irrelevant ones
  ("which sensor is relevant for detecting <failure mode> in <asset>?");
- an empty cell makes an elimination question: its option is the one irrelevant among relevant ones
  ("which sensor is NOT relevant ...?").
Each question has as many options as the cell's row or column allows, up to `max_options`. On the
published matrix that gives the published set exactly: 470 + 453 selection and 872 + 872 elimination
questions (2,667), with 2 / 3 / 4 / 5 options in 487 / 266 / 389 / 1,525 of them.

The multi-correct set asks for the `k` relevant options among irrelevant ones (one question per tick,
the tick's option and k - 1 other relevant ones), as the published `multi_true_multi_choice_qa` set.

Records carry the published fields (`relevancy`, `question_type`, `option_ids`, ...) spelled as the
published files spell them, so that a published file and a built set go through one code path
(`question_frame`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from alia.data.tables import asset_key
from alia.student.failuresensoriq import load_mcqa

DIRECTIONS = ("fm2sensor", "sensor2fm")
FORMS = ("selection", "elimination")
LETTERS = "ABCDEFGHIJ"
PERTURBED_LETTERS = "PQRSTUVWXY"  # relabelled options, as FailureSensorIQ's perturbed set

# The published `relevancy` label of each direction and form, and `question_type` of each form.
RELEVANCY = {
    ("fm2sensor", "selection"): "relevant_sensors_for_failure_mode",
    ("fm2sensor", "elimination"): "irrelevant_sensors_for_failure_mode",
    ("sensor2fm", "selection"): "relevant_failure_modes_for_sensor",
    ("sensor2fm", "elimination"): "irrelevant_failure_modes_for_sensor",
}
QUESTION_TYPE = {"selection": "mcp1_positive", "elimination": "mcp1_negative"}
SUBJECT = "failure_mode_sensor_analysis"  # the published records' `subject`

# Several wordings per direction and form, so that a model cannot key on one sentence.
TEMPLATES = {
    ("fm2sensor", "selection"): [
        "Which sensor is relevant for detecting {failure_mode} in {a_asset}?",
        "A reliability engineer wants to detect {failure_mode} on {a_asset}. "
        "Which measurement should be watched?",
        "For {a_asset}, which of these signals would reveal {failure_mode}?",
        "Which condition-monitoring measurement is most useful to detect {failure_mode} in {a_asset}?",
    ],
    ("fm2sensor", "elimination"): [
        "Which sensor is NOT relevant for detecting {failure_mode} in {a_asset}?",
        "A reliability engineer wants to detect {failure_mode} on {a_asset}. "
        "Which measurement would NOT help?",
        "For {a_asset}, which of these signals would NOT reveal {failure_mode}?",
        "Which measurement is least useful to detect {failure_mode} in {a_asset}?",
    ],
    ("sensor2fm", "selection"): [
        "Which failure mode of {a_asset} can be detected with {sensor}?",
        "{A_asset} is monitored through {sensor}. Which failure mode can this measurement reveal?",
        "Monitoring {sensor} on {a_asset} is most useful to detect which failure mode?",
        "Which {asset} failure mode shows up in {sensor}?",
    ],
    ("sensor2fm", "elimination"): [
        "Which failure mode of {a_asset} can NOT be detected with {sensor}?",
        "{A_asset} is monitored through {sensor}. Which failure mode would this measurement NOT reveal?",
        "Monitoring {sensor} on {a_asset} does NOT help to detect which failure mode?",
        "Which {asset} failure mode does NOT show up in {sensor}?",
    ],
}
MULTI_TEMPLATES = {
    "fm2sensor": [
        "Which {k} sensors are relevant for detecting {failure_mode} in {a_asset}?",
        "Select the {k} measurements that would reveal {failure_mode} on {a_asset}.",
    ],
    "sensor2fm": [
        "Which {k} failure modes of {a_asset} can be detected with {sensor}?",
        "Select the {k} failure modes of {a_asset} that show up in {sensor}.",
    ],
}

# The stable schema of every question set (D_eval, its multi-correct form, the expert set, the
# published files): the published fields, then what alia derives from them.
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("options", pa.list_(pa.string())),
        ("option_ids", pa.list_(pa.string())),
        ("correct", pa.list_(pa.bool_())),
        ("asset_name", pa.string()),
        ("relevancy", pa.string()),
        ("question_type", pa.string()),
        ("subject", pa.string()),
        ("answer_index", pa.int64()),  # the single correct option; -1 where several are correct
        ("direction", pa.string()),  # fm2sensor, sensor2fm, or other
        ("form", pa.string()),  # selection or elimination
        ("failure_mode", pa.string()),  # the matrix cell the question was built from ("" if unknown)
        ("sensor", pa.string()),
        ("template", pa.int64()),  # the wording's index (-1: not built here)
    ]
)


def question_frame(records: pd.DataFrame) -> pd.DataFrame:
    """Question records (built, or read from a FailureSensorIQ file) in the stable schema: direction
    and form from the published labels, the answer index from `correct`."""
    relevancy = records["relevancy"].astype(str)
    question_type = records["question_type"].fillna("").astype(str)
    negative = np.where(
        question_type != "", question_type.str.endswith("negative"), relevancy.str.startswith("irrelevant")
    )
    n_options = records["options"].map(len)
    frame = records.assign(
        id=records["id"].astype(str),
        option_ids=records.get("option_ids", n_options.map(lambda n: list(LETTERS[:n]))),
        answer_index=records["correct"].map(lambda c: list(c).index(True) if sum(c) == 1 else -1),
        direction=np.select(
            [
                relevancy.str.contains(r"sensors?_for_failure_mode$"),
                relevancy.str.contains(r"failure_modes?_for_sensor$"),
            ],
            ["fm2sensor", "sensor2fm"],
            "other",
        ),
        form=np.where(negative, "elimination", "selection"),
    )
    for column, default in (("subject", SUBJECT), ("failure_mode", ""), ("sensor", ""), ("template", -1)):
        if column not in frame:
            frame[column] = default
    return frame[SCHEMA.names].reset_index(drop=True)


def load_question_set(source: str) -> pd.DataFrame:
    """A published or local FailureSensorIQ file in the stable schema."""
    return question_frame(load_mcqa(source))


def _check_disjoint(matrix: pd.DataFrame, source_assets: list[str] | None) -> None:
    if source_assets is not None:
        shared = {asset_key(a) for a in matrix["asset"]} & {asset_key(a) for a in source_assets}
        if shared:
            raise ValueError(f"D_eval questions would ask about D_source assets: {sorted(shared)}")


def anchor_rows(matrix: pd.DataFrame, direction: str):
    """Per asset and anchor (the failure mode, or the sensor, of a direction): the anchor's column,
    the anchor, the options' column, and its relevant and irrelevant options, each sorted."""
    anchor, option = ("failure_mode", "sensor") if direction == "fm2sensor" else ("sensor", "failure_mode")
    for (asset, subject), group in matrix.groupby(["asset", anchor], sort=True):
        yield (
            asset,
            anchor,
            subject,
            option,
            sorted(group.loc[group["relevant"], option]),
            sorted(group.loc[~group["relevant"], option]),
        )


def build_questions(
    matrix: pd.DataFrame,
    min_options: int = 2,
    max_options: int = 5,
    seed: int = 0,
    source_assets: list[str] | None = None,
) -> pd.DataFrame:
    """One single-correct question per matrix cell and direction (see the module's docstring).

    `matrix` has one row per (asset, failure_mode, sensor) with a boolean `relevant`. A cell whose
    row (or column) offers fewer than `min_options - 1` distractors makes no question.
    `source_assets` (D_source) must share no asset with the matrix.
    """
    if not 2 <= min_options <= max_options <= len(LETTERS):
        raise ValueError(f"expected 2 <= min_options <= max_options <= {len(LETTERS)}")
    _check_disjoint(matrix, source_assets)
    rng = np.random.default_rng(seed)
    rows = []
    for direction in DIRECTIONS:
        for asset, anchor, subject, option, relevant, irrelevant in anchor_rows(matrix, direction):
            for form, answers, distractors in (
                ("selection", relevant, irrelevant),
                ("elimination", irrelevant, relevant),
            ):
                n_options = min(max_options, len(distractors) + 1)
                if n_options < min_options:
                    continue
                for answer in answers:
                    picked = [distractors[j] for j in rng.choice(len(distractors), n_options - 1, False)]
                    options = [answer, *picked]
                    options = [options[j] for j in rng.permutation(n_options)]
                    cell = {anchor: subject, option: answer}
                    template = int(rng.integers(len(TEMPLATES[direction, form])))
                    rows.append(
                        {
                            "question": render(TEMPLATES[direction, form][template], asset, **cell),
                            "options": options,
                            "correct": [o == answer for o in options],
                            "asset_name": asset,
                            "relevancy": RELEVANCY[direction, form],
                            "question_type": QUESTION_TYPE[form],
                            **cell,
                            "template": template,
                        }
                    )
    questions = pd.DataFrame(rows)
    questions.insert(0, "id", [f"deval-{i:05d}" for i in range(len(questions))])
    return question_frame(questions)


def build_multi_correct(
    matrix: pd.DataFrame,
    correct: int = 2,
    max_options: int = 5,
    seed: int = 0,
    source_assets: list[str] | None = None,
) -> pd.DataFrame:
    """One question per tick and direction with `correct` relevant options (the tick's and others of
    its row or column) among irrelevant ones, up to `max_options` options in all."""
    if not 2 <= correct < max_options <= len(LETTERS):
        raise ValueError(f"expected 2 <= correct < max_options <= {len(LETTERS)}")
    _check_disjoint(matrix, source_assets)
    rng = np.random.default_rng(seed)
    rows = []
    for direction in DIRECTIONS:
        for asset, anchor, subject, _, relevant, irrelevant in anchor_rows(matrix, direction):
            if len(relevant) < correct or not irrelevant:
                continue
            n_options = min(max_options, correct + len(irrelevant))
            for answer in relevant:
                others = [r for r in relevant if r != answer]
                answers = [answer] + [others[j] for j in rng.choice(len(others), correct - 1, False)]
                picked = [irrelevant[j] for j in rng.choice(len(irrelevant), n_options - correct, False)]
                options = [(answers + picked)[j] for j in rng.permutation(n_options)]
                template = int(rng.integers(len(MULTI_TEMPLATES[direction])))
                rows.append(
                    {
                        "question": render(
                            MULTI_TEMPLATES[direction][template], asset, k=correct, **{anchor: subject}
                        ),
                        "options": options,
                        "correct": [o in answers for o in options],
                        "asset_name": asset,
                        "relevancy": RELEVANCY[direction, "selection"],
                        "question_type": QUESTION_TYPE["selection"],
                        anchor: subject,
                        "template": template,
                    }
                )
    questions = pd.DataFrame(rows)
    questions.insert(0, "id", [f"deval-multi-{i:05d}" for i in range(len(questions))])
    return question_frame(questions.fillna({"failure_mode": "", "sensor": ""}))


def with_article(asset: str) -> str:
    """ "a pump", "an electric motor"."""
    name = asset.lower()
    return ("an " if name[0] in "aeiou" else "a ") + name


def render(template: str, asset: str, **fields: object) -> str:
    a_asset = with_article(asset)
    return template.format(asset=asset.lower(), a_asset=a_asset, A_asset=a_asset.capitalize(), **fields)


def stratified_sample(questions: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """A seeded sample of `n` questions, each asset x direction x form stratum in its share of the
    set (largest remainders); all of them for n = 0 or n >= len(questions). Original order kept."""
    if n <= 0 or n >= len(questions):
        return questions
    strata = questions.groupby(["asset_name", "direction", "form"], sort=True).groups
    quotas = {key: len(index) * n / len(questions) for key, index in strata.items()}
    counts = {key: int(q) for key, q in quotas.items()}
    for key in sorted(quotas, key=lambda k: counts[k] - quotas[k])[: n - sum(counts.values())]:
        counts[key] += 1
    rng = np.random.default_rng(seed)
    picked = [i for key, index in strata.items() for i in rng.choice(index, counts[key], replace=False)]
    return questions.loc[sorted(picked)]


def perturb(questions: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """A PertEval-style copy: every question's options in another order, relabelled P, Q, R, ...;
    the answer key follows its option."""
    rng = np.random.default_rng(seed)
    rows = []
    for options, correct in zip(questions["options"], questions["correct"], strict=True):
        n = len(options)
        order = rng.permutation(n)
        while n > 1 and (order == np.arange(n)).all():  # always another order
            order = rng.permutation(n)
        rows.append(([options[j] for j in order], [bool(correct[j]) for j in order]))
    options, correct = zip(*rows, strict=True) if rows else ((), ())
    return questions.assign(
        options=list(options),
        correct=list(correct),
        option_ids=[list(PERTURBED_LETTERS[: len(o)]) for o in options],
        answer_index=[list(c).index(True) if sum(c) == 1 else -1 for c in correct],
    )


def to_table(questions: pd.DataFrame) -> pa.Table:
    """Questions as an Arrow table with the stable schema (a missing or mistyped column fails here)."""
    return pa.Table.from_pandas(questions[SCHEMA.names], schema=SCHEMA, preserve_index=False)
