"""Scoring a model behind an endpoint (the teacher) on the students' questions, through the one LLM
client (cached, counted). Each question's chat message is the instruct students' own
(alia.student.formats.chat_message), sent as the conversation's one user turn, so that a teacher and
a student read the same words; the client's temperature decides the sampling (eval_teacher: 0).

- generative (`gen_acc`): the letter read from the answer, as the students' (scoring.read_letter);
- letter (`letter_acc`): from the same request, where the endpoint serves `logprobs`: each label's
  log-probability as the answer's first token, read from its `top_logprobs` (a label outside them
  scores -inf; none inside: undecided, so wrong). An endpoint that serves none scores no letter;
- leaderboard (`leaderboard_acc`): FailureSensorIQ's protocol (alia.student.leaderboard).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from alia.llm.client import Answer, LLMClient
from alia.student.formats import chat_message, question_rows
from alia.student.leaderboard import Answerer, Message, ask_rounds
from alia.student.questions import stratified_sample
from alia.student.scoring import compare, read_letter, summarise

ENDPOINT_MODES = ("letter", "generative", "leaderboard")


def endpoint_answers(client: LLMClient, max_tokens: int) -> Answerer:
    """Replies of an endpoint to the leaderboard's conversations, through the one client."""

    def answer(conversations: list[list[Message]], desc: str) -> list[str]:
        return [a.text for a in client.ask(conversations, desc=desc, request={"max_tokens": max_tokens})]

    return answer


def label_logprobs(answer: Answer, labels: list[str]) -> np.ndarray:
    """Each label's log-probability as the first token (" A" and "A" alike; -inf where not returned)."""
    best = {label: -math.inf for label in labels}
    for token, logprob in answer.top_logprobs:
        if token.strip() in best:
            best[token.strip()] = max(best[token.strip()], logprob)
    return np.array([best[label] for label in labels])


def score_endpoint(
    client: LLMClient,
    questions: pd.DataFrame,
    modes: tuple[str, ...],
    top_logprobs: int = 20,
    leaderboard_max_tokens: int = 512,
    desc: str = "endpoint",
) -> tuple[pd.DataFrame, bool]:
    """One row per question with each mode's pick and whether it is right, and whether the endpoint
    served log-probabilities (False: no letter columns)."""
    unknown = set(modes) - set(ENDPOINT_MODES)
    if unknown:
        raise ValueError(f"endpoint scoring modes {sorted(unknown)}: expected some of {ENDPOINT_MODES}")
    rows = question_rows(questions)
    if (rows["answer_index"] < 0).any() and set(modes) != {"leaderboard"}:
        raise ValueError("an endpoint scores multi-correct questions in leaderboard mode only")
    served = False
    if {"letter", "generative"} & set(modes):
        conversations = [
            [
                {
                    "role": "user",
                    "content": chat_message(r.question, list(r.options), list(r.option_ids), r.correct),
                }
            ]
            for r in rows.itertuples()
        ]
        request = {"logprobs": True, "top_logprobs": top_logprobs} if "letter" in modes else {}
        answers = client.ask(conversations, desc=desc, request=request)  # one ask serves both modes
        rows["answer"] = [a.text for a in answers]
        if "generative" in modes:
            letters = [
                read_letter(a.text, list(ids)) for a, ids in zip(answers, rows["option_ids"], strict=True)
            ]
            rows["gen_pred"] = [-1 if x is None else x for x in letters]
            rows["undecided"] = [x is None for x in letters]
            rows["gen_acc"] = [float(x == a) for x, a in zip(letters, rows["answer_index"], strict=True)]
        served = any(a.top_logprobs for a in answers)
        if "letter" in modes and served:
            logprobs = [
                label_logprobs(a, list(ids)) for a, ids in zip(answers, rows["option_ids"], strict=True)
            ]
            picks = [int(np.argmax(lp)) if np.isfinite(lp).any() else -1 for lp in logprobs]
            rows["letter_logprobs"] = [np.where(np.isfinite(lp), lp, None).tolist() for lp in logprobs]
            rows["letter_pred"] = [[p] if p >= 0 else [] for p in picks]
            rows["letter_acc"] = [float(p == a) for p, a in zip(picks, rows["answer_index"], strict=True)]
    if "leaderboard" in modes:
        rows = rows.assign(
            **ask_rounds(rows, endpoint_answers(client, leaderboard_max_tokens), f"{desc} leaderboard")
        )
    return rows, served


def evaluate_endpoint(
    client: LLMClient,
    question_sets: dict[str, pd.DataFrame],
    params: dict[str, Any],
    mcqa: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame]:
    """Headline metrics and breakdown per question set of `params` (eval_teacher:) on the students'
    samples (mcqa: sizes and seed), and every question's prediction (one frame, a `set` column)."""
    metrics: dict[str, Any] = {"model": client.config.model, "endpoint": client.config.base_url}
    breakdowns, predictions, served = {}, [], []
    for name in params["sets"]:
        if name not in question_sets or name not in mcqa["sets"]:
            raise ValueError(
                f"eval_teacher.sets: {name!r} is not a question set the students are scored on "
                f"(mcqa.sets: {sorted(mcqa['sets'])})"
            )
        sample = stratified_sample(question_sets[name], mcqa["sets"][name]["sample"], mcqa["seed"])
        multi = (sample["correct"].map(sum) > 1).any() if "correct" in sample else False
        modes = ("leaderboard",) if multi else tuple(params["modes"])  # one protocol scores a set of options
        scored, logprobs = score_endpoint(
            client,
            sample,
            modes,
            params["top_logprobs"],
            mcqa["leaderboard_max_new_tokens"],
            f"teacher {name}",
        )
        served.append(logprobs)
        headline, breakdowns[name] = summarise(scored, mcqa["bootstrap_resamples"], mcqa["seed"])
        metrics[name] = {"of": len(question_sets[name]), "modes": list(modes), **headline}
        predictions.append(scored.assign(set=name))
    metrics["logprobs_served"] = any(served)
    return metrics, breakdowns, pd.concat(predictions, ignore_index=True)


def compare_with_students(
    metrics: dict[str, Any],
    predictions: pd.DataFrame,
    students: dict[str, pd.DataFrame],
    mcqa: dict[str, Any],
) -> dict[str, Any]:
    """`metrics` with, per set, the teacher's paired difference from each student (teacher - student on
    the same questions, per scorer both were scored by)."""
    for name, scored in predictions.groupby("set", sort=False):
        metrics[name]["vs_students"] = {
            student: compare(
                scored.reset_index(drop=True),
                theirs[theirs["set"] == name].reset_index(drop=True),
                mcqa["bootstrap_resamples"],
                mcqa["seed"],
            )
            for student, theirs in sorted(students.items())
            if (theirs["set"] == name).any()
        }
    return metrics
