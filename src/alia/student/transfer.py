"""The transfer rung: does knowledge written about some assets reach assets the student never read about?

Oracle facts, labelled so everywhere: the 10 ISO 17359 assets go into seeded folds; for each fold
the true tick matrix of the *other* assets (which sensors detect which failure modes, and which do
not) takes Phase I's place, corpora are written from it, a student trains on each under the default
recipe, and only the held-out assets' questions are scored, paired with the untuned student.

Arms (what writes the corpus from the same facts):
- `template`: no LLM, the positive controls' writers (alia.student.controls) on the other assets'
  matrix: sentences (`text`) and question-answer records in D_eval's own format (`chat`);
- `teacher`: the pipeline's own Phase II, the KD_Base prompt through the teacher with the facts as
  Phase I's (`text`), and KD_QA from those passages (`chat`);
- `shuffled`: the template arm on a matrix whose failure modes were permuted within each asset: the
  same sentences, sensors, counts and format, the wrong facts. A gain over it is the facts', not the
  format's;
- `teacher_checked`: the teacher arm's passages that pass the config's `filters` (alia.kd.faithfulness,
  each passage read against its true facts); `teacher_random`: as many of the teacher arm's passages,
  drawn at random (seeded), so that a difference between the two is the filter's, not the size's.
And `facts_lookup`, no model at all: each option scored by how often its (failure mode, sensor)
pair is ticked among the training assets: how much of the held-out answers the facts decide.

The experiment runs from configs/transfer/cpu.yaml (alia.student.transfer_run); this module is its
design: folds, facts, corpora, the lookup baseline and the pooled table.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from alia.core.params import Count, Format, Mode, PositiveInt
from alia.kd.corpora import knowledge_requests
from alia.student.controls import control_qa, control_text
from alia.student.scoring import SUBSETS, compare, subset
from alia.student.stats import bootstrap_ci, clusters

Arm = Literal["template", "teacher", "shuffled", "teacher_checked", "teacher_random"]
LABEL = "oracle facts: the true tick matrix of the other assets; no question about a training asset scored"


class TransferConfig(BaseModel):
    """configs/transfer/cpu.yaml. The recipe (train_student.lora, .sft, .replay_fraction, .dtype) and the
    scorer (mcqa: prompt style, batch size, bootstrap) are params.yaml's: the rung changes the facts,
    nothing else; `sft` here overrides fields of train_student.sft (a smaller test run)."""

    model_config = ConfigDict(extra="forbid")
    folds: Annotated[int, Field(ge=2)] = 5  # groups of held-out assets
    seed: int = 0
    arms: dict[Arm, list[Format]] = Field(min_length=1)  # the formats each arm writes and trains
    # the chat corpora's records: one per tick in these directions (fm2sensor alone halves the cost;
    # the held-out sensor2fm questions then ask the reverse of what was read)
    qa_directions: list[Literal["fm2sensor", "sensor2fm"]] = Field(
        default=["fm2sensor", "sensor2fm"], min_length=1
    )
    # also score each trained unit on its own training assets' questions (a leak by design, labelled
    # `_in_sample`): whether a student that transfers nothing learned what it read
    in_sample: bool = False
    questions_per_fold: Count = 0  # a stratified sample of each fold's held-out questions; 0: all
    modes: list[Mode] = Field(default=["letter", "loglikelihood"], min_length=1)
    student: str = "student_instruct"  # a prepare_models role
    teacher: dict[str, Any] = {}  # the teacher arm's changes to params.yaml teacher: (kd_base's own first)
    facts_per_document: PositiveInt = 3  # the teacher arm's facts per KD_Base prompt
    qa_documents: Count = 0  # the teacher arm's KD_Base passages asked for QA pairs per fold; 0: all
    min_pairs: PositiveInt = 3
    # teacher_checked's filters, alia.kd.faithfulness.FILTERS by name (params.yaml kd_base.filters' fields)
    filters: dict[str, float | None] = {}
    sft: dict[str, Any] = {}


# --- folds and facts ------------------------------------------------------------------------------


def asset_folds(assets: list[str], folds: int, seed: int = 0) -> list[list[str]]:
    """The assets in `folds` seeded groups of (nearly) equal size, each group sorted."""
    if not 2 <= folds <= len(assets):
        raise ValueError(f"transfer folds: {folds}; expected 2 to {len(assets)} (one asset per fold at most)")
    order = np.random.default_rng(seed).permutation(sorted(assets))
    return [sorted(map(str, part)) for part in np.array_split(order, folds)]


def shuffle_failure_modes(matrix: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The matrix with each asset's failure modes permuted among themselves (no failure mode keeps its
    own row where the asset has two or more): every sensor keeps its ticks and every failure mode its
    count of relevant sensors, but which failure mode a sensor detects is wrong."""
    rng = np.random.default_rng(seed)
    parts = []
    for _, part in matrix.groupby("asset", sort=True):
        names = sorted(part["failure_mode"].unique())
        order = np.arange(len(names))
        while len(names) > 1 and (order == np.arange(len(names))).any():
            order = rng.permutation(len(names))
        mapping = {names[i]: names[j] for i, j in enumerate(order)}
        parts.append(part.assign(failure_mode=part["failure_mode"].map(mapping)))
    return pd.concat(parts, ignore_index=True)


def template_corpus(
    matrix: pd.DataFrame, fmt: str, directions: tuple[str, ...] = ("fm2sensor", "sensor2fm")
) -> pd.DataFrame:
    """The template writers of the positive controls, on whatever matrix they are given; a chat
    corpus keeps the records of `directions` (an fm2sensor record's answer is a sensor)."""
    if fmt == "text":
        return control_text(matrix)
    qa = control_qa(matrix)
    keep = qa["answer"].isin(set(matrix["sensor"]))
    keep = keep if "fm2sensor" in directions else ~keep
    return qa if len(set(directions)) == 2 else qa[keep].reset_index(drop=True)


def phase1_facts(matrix: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A tick matrix as Phase I's outputs (stage kd_base's inputs): each asset as a class, its sensors
    ranked by how many failure modes they detect, its failure modes, and every cell as a relevance
    answer (the teacher's yes/no replaced by the truth)."""
    ticks = matrix[matrix["relevant"]]
    ranked = ticks.groupby(["asset", "sensor"]).size().rename("n").reset_index()  # sorted by sensor
    ranked = ranked.sort_values(["asset", "n"], ascending=[True, False], kind="stable")
    ranked["rank"] = ranked.groupby("asset").cumcount() + 1
    return {
        "sensors": ranked.rename(columns={"asset": "equipment_class"})[["equipment_class", "rank", "sensor"]],
        "class_failure_modes": matrix[["asset", "failure_mode"]]
        .drop_duplicates()
        .rename(columns={"asset": "equipment_class"}),
        "relevance": matrix.rename(columns={"asset": "equipment_class"})[
            ["equipment_class", "failure_mode", "sensor", "relevant"]
        ],
    }


def teacher_requests(matrix: pd.DataFrame, facts_per_document: int) -> pd.DataFrame:
    """KD_Base's requests (alia.kd.corpora.knowledge_requests) from the true facts of every asset in
    `matrix`: all its sensors, all its failure modes, every tick."""
    facts = phase1_facts(matrix)
    return knowledge_requests(
        classes=sorted(matrix["asset"].unique()),
        class_failure_modes=facts["class_failure_modes"],
        sensors=facts["sensors"],
        relevance=facts["relevance"],
        failure_modes_per_class=10**6,
        sensors_per_class=10**6,
        facts_per_document=facts_per_document,
    )


# --- the baseline without a model --------------------------------------------------------------


def facts_lookup(questions: pd.DataFrame, matrix: pd.DataFrame) -> np.ndarray:
    """Right (1.0) or wrong per question, for a reader of the training facts alone: each option scored
    by the tick rate of its (failure mode, sensor) pair among the training assets, else its sensor's
    (fm2sensor) or failure mode's (sensor2fm) tick rate, else 0.5; the highest option picked for a
    selection question, the lowest for an elimination one (ties: the first)."""
    pair = matrix.groupby(["failure_mode", "sensor"])["relevant"].mean().to_dict()
    by_sensor = matrix.groupby("sensor")["relevant"].mean().to_dict()
    by_fm = matrix.groupby("failure_mode")["relevant"].mean().to_dict()
    right = []
    for q in questions.itertuples():
        scores = []
        for option in q.options:
            fm, sensor = (q.failure_mode, option) if q.direction == "fm2sensor" else (option, q.sensor)
            fallback = by_sensor.get(sensor) if q.direction == "fm2sensor" else by_fm.get(fm)
            scores.append(pair.get((fm, sensor), 0.5 if fallback is None else fallback))
        pick = int(np.argmin(scores) if q.form == "elimination" else np.argmax(scores))
        right.append(float(pick == q.answer_index))
    return np.asarray(right)


# --- the pooled table -----------------------------------------------------------------------------


def accuracies(scored: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy per scorer (letter, log-likelihood) on each of alia.student.scoring.SUBSETS (Acc_All,
    FailureSensorIQ's Acc_Sel / Acc_El, ours pooled), each with its 95% interval over question clusters."""
    scored = scored.reset_index(drop=True)
    groups = clusters(scored)
    accuracy: dict[str, Any] = {"questions": len(scored)}
    for scorer, column in (("letter", "letter_acc"), ("loglikelihood", "ll_acc")):
        if column in scored:
            for key in SUBSETS:
                keep = subset(scored, key)
                accuracy[f"{scorer}_acc_{key}"] = round(float(scored.loc[keep, column].mean()), 4)
                accuracy[f"{scorer}_acc_{key}_ci95"] = bootstrap_ci(
                    scored.loc[keep, column], groups[keep], resamples, seed
                )
    return accuracy


def pooled_results(
    predictions: dict[str, pd.DataFrame], untuned: pd.DataFrame, resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Per arm and format (`<arm>_<format>`, every fold's held-out questions together): accuracy per
    scorer and its paired difference from the untuned student on the same questions (alia.student.
    scoring.compare: interval over question clusters, McNemar's p, the smallest detectable difference)."""
    results: dict[str, Any] = {}
    for name, scored in predictions.items():
        scored = scored.reset_index(drop=True)
        base = untuned.set_index("id").loc[scored["id"]].reset_index()
        by_direction = {}
        for direction in sorted(scored["direction"].unique()):
            # a chat corpus may hold one direction only: what reaches the other is a result of its own
            keep = (scored["direction"] == direction).to_numpy()
            by_direction[direction] = compare(
                scored[keep].reset_index(drop=True), base[keep].reset_index(drop=True), resamples, seed
            )
        results[name] = {
            **accuracies(scored, resamples, seed),
            "vs_untuned": compare(scored, base, resamples, seed),
            "vs_untuned_by_direction": by_direction,
        }
    return results


def rung_table(results: dict[str, Any], against: str = "untuned") -> str:
    """The rung as Markdown: per arm and format, Δ vs untuned (or the arm `against`: 95% CI, McNemar
    p, MDE) per scorer."""
    lines = [
        "| arm, format | questions | scorer | Δ all [95% CI] | p | MDE | Δ Acc_Sel [95% CI] "
        "| Δ Acc_El [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for scorer, paired in result.get(f"vs_{against}", {}).items():
            all_, sel, el = paired["all"], paired.get("sel", {}), paired.get("el", {})
            lines.append(
                f"| {name} | {result['questions']} | {scorer} | {_delta(all_)} | {all_['p_mcnemar']:.3g} | "
                f"{all_['mde']:.3f} | {_delta(sel)} | {_delta(el)} |"
            )
    return "\n".join(lines) + "\n"


def direction_table(results: dict[str, Any], scorer: str = "loglikelihood", against: str = "untuned") -> str:
    """Δ vs untuned (or vs shuffled) per question direction and form, one scorer: which way the
    knowledge travelled."""
    lines = [
        f"| arm, format | {scorer} vs {against}: fm2sensor sel | fm2sensor el | sensor2fm sel "
        "| sensor2fm el |",
        "|---|---|---|---|---|",
    ]
    for name, result in results.items():
        if f"vs_{against}_by_direction" not in result:
            continue
        by = result[f"vs_{against}_by_direction"]
        cells = [
            _delta(by.get(direction, {}).get(scorer, {}).get(form, {}))
            for direction in ("fm2sensor", "sensor2fm")
            for form in ("sel_pooled", "el_pooled")  # in one direction: its selection, its elimination
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _delta(paired: dict[str, Any]) -> str:
    if not paired:
        return "-"
    low, high = paired["ci95"]
    return f"{paired['delta']:+.3f} [{low:+.3f}, {high:+.3f}]"
