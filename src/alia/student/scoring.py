"""The MCQA scorer: how well a causal LM answers FailureSensorIQ-style multiple-choice questions.

Three scorers, each a column of per-question right/wrong:
- letter (`letter_acc`): the options lettered in the prompt, the log-probability of each option's
  letter as the next token, one forward pass per question (as MMLU-style harnesses score instruct
  models). It can express "NOT": the model reads every option before it picks;
- log-likelihood (`ll_acc`, `ll_acc_norm`): the summed log-probability of each option's text after the
  question, the highest (acc) or the highest per character (acc_norm), lm-evaluation-harness's
  definitions and tokenisation (benchmarks/mcqa_vs_lm_eval.py). It scores how plausible an option's
  text is, not whether it answers a negated question: blind to elimination by construction;
- generative (`gen_acc`): the model answers greedily and the letter is read from its answer; an answer
  with no letter, several letters or a claim that no option is right is undecided;
- leaderboard (`leaderboard_acc`): FailureSensorIQ's leaderboard protocol (alia.student.leaderboard):
  a step-by-step prompt, the answer as JSON, up to 3 asks, an exact match of the chosen set.

Every scorer reports Acc_All, and Acc_Sel / Acc_El as FailureSensorIQ's run_eval.py defines them: the
failure mode -> sensor selection questions (`relevancy` relevant_sensors_for_failure_mode) and
elimination questions (irrelevant_sensors_for_failure_mode); the sensor -> failure mode questions count
in Acc_All only. Acc_Sel_pooled / Acc_El_pooled are all selection / elimination questions, both
directions. Each with 95% intervals from a bootstrap over clusters of questions built from the same asset
and failure mode (their paraphrases are not independent). A perturbed copy of each question (options
reordered, relabelled P, Q, R, ...) gives Acc_Perturb and Consistency (right on both copies) for the
letter and generative scorers. A trained variant is compared with the model it was trained from on
the same questions: the paired difference with its cluster-bootstrap interval, McNemar's exact p, and
the smallest difference the set can detect.

Multi-correct questions (several right options, the number given in the question) are scored by
letter only: the k most probable letters, exact set match and per-option F1.

Base models get k-shot prompts (examples from other assets, so no answer leaks); instruct models
get their chat template, zero-shot.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

from alia.core.params import Mode
from alia.student.engine import generate, label_token, load_model, loglikelihoods, next_token_logprobs
from alia.student.formats import PromptStyle, build_prompts, prompt_style
from alia.student.leaderboard import ask_rounds, local_answers
from alia.student.questions import perturb, stratified_sample
from alia.student.stats import Z_POWER, bootstrap_ci, bootstrap_means, clusters, paired_difference

MODES = get_args(Mode)
# scorer -> its per-question column; the modes that make them
SCORERS = {
    "letter": "letter_acc",
    "loglikelihood": "ll_acc",
    "loglikelihood_norm": "ll_acc_norm",
    "generative": "gen_acc",
    "leaderboard": "leaderboard_acc",
}
PERTURBED = ("letter", "generative")  # the scorers that read letters, so relabelling can move them


# --- reading answers ------------------------------------------------------------------------------

NONE_CLAIM = re.compile(
    r"\b(none of (the|these|them)|no (option|answer|choice) is|neither|all of (the|these) are wrong)\b", re.I
)
CAPITAL = re.compile(r"(?<![A-Za-z])[A-Z](?![A-Za-z])")  # a capital letter standing alone
ARTICLE = re.compile(r"A [a-z]")  # "A reliability engineer ...": the article, not option A


def read_letter(answer: str, labels: list[str] | int) -> int | None:
    """The option an answer names, or None when it is undecided (no label, several, or "none").
    `labels` are the options' letters (an int n: the first n of A, B, C, ...)."""
    labels = list("ABCDEFGHIJ"[:labels]) if isinstance(labels, int) else list(labels)
    # a base model runs on into the next k-shot question: only the first paragraph is its answer
    first = answer.strip().split("\n\n")[0].split("Question:")[0]
    if NONE_CLAIM.search(first):
        return None
    named = {
        m.group()
        for m in CAPITAL.finditer(first)
        if m.group() in labels and not (m.group() == "A" and ARTICLE.match(first, m.start()))
    }
    return labels.index(named.pop()) if len(named) == 1 else None


def choose(lls: np.ndarray, options: list[str]) -> tuple[int, int]:
    """lm-eval's picks: the highest log-likelihood, and the highest per character of the option."""
    lengths = np.array([float(len(o)) for o in options])
    return int(np.argmax(lls)), int(np.argmax(np.asarray(lls) / lengths))


# --- scoring a question set ----------------------------------------------------------------------


def option_loglikelihoods(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    rows: pd.DataFrame,
    style: PromptStyle,
    batch_size: int = 8,
    desc: str = "log-likelihood",
) -> list[np.ndarray]:
    """Per question of `build_prompts`' rows, the log-likelihood of each option after its context
    (a question's options continue one pass of its context: `loglikelihoods`)."""
    pairs = [(r.context, style.delimiter + o) for r in rows.itertuples() for o in r.options]
    flat = loglikelihoods(model, tokenizer, pairs, batch_size, desc=desc)
    bounds = np.cumsum([0] + [len(o) for o in rows["options"]])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def letter_picks(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    rows: pd.DataFrame,
    style: PromptStyle,
    batch_size: int = 8,
    desc: str = "letter",
) -> dict[str, list]:
    """Letter mode over `build_prompts`' rows: each label's log-probability, the pick (the k most
    probable labels for a k-correct question) and whether it is right (the exact set)."""
    candidates = [[label_token(tokenizer, x, style.delimiter) for x in ids] for ids in rows["option_ids"]]
    logprobs = next_token_logprobs(model, tokenizer, rows["prompt"].tolist(), candidates, batch_size, desc)
    picks, right, f1 = [], [], []
    for lp, correct in zip(logprobs, rows["correct"], strict=True):
        gold = {j for j, c in enumerate(correct) if c}
        pick = sorted(int(j) for j in np.argsort(-lp, kind="stable")[: len(gold)])
        picks.append(pick)
        right.append(float(set(pick) == gold))
        f1.append(2 * len(gold & set(pick)) / (len(gold) + len(pick)))
    return {
        "letter_logprobs": [lp.round(4).tolist() for lp in logprobs],
        "letter_pred": picks,  # the picked options (k of them for a k-correct question)
        "letter_acc": right,
        "letter_f1": f1,
    }


def generative_picks(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    rows: pd.DataFrame,
    max_new_tokens: int = 8,
    batch_size: int = 8,
    desc: str = "generate",
) -> dict[str, list]:
    answers = generate(model, tokenizer, rows["prompt"].tolist(), max_new_tokens, batch_size, desc)
    letters = [read_letter(a, list(ids)) for a, ids in zip(answers, rows["option_ids"], strict=True)]
    return {
        "answer": answers,
        "gen_pred": [-1 if x is None else x for x in letters],
        "undecided": [x is None for x in letters],
        "gen_acc": [float(x == a) for x, a in zip(letters, rows["answer_index"], strict=True)],
    }


def score_questions(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    questions: pd.DataFrame,
    style: PromptStyle,
    modes: tuple[str, ...] = MODES,
    batch_size: int = 8,
    max_new_tokens: int = 8,
    seed: int = 0,
    perturbation: bool = True,
    desc: str = "",
    leaderboard_max_new_tokens: int = 512,
) -> pd.DataFrame:
    """One row per question with each mode's pick and whether it is right; with `perturbation`, the
    letter and generative modes also on the perturbed copy (`*_perturbed` columns)."""
    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"scoring modes {sorted(unknown)}: expected some of {MODES}")
    rows = build_prompts(questions, style, tokenizer, seed)
    if (rows["answer_index"] < 0).any() and not set(modes) <= {"letter", "leaderboard"}:
        raise ValueError("multi-correct questions are scored in letter and leaderboard modes only")
    if "letter" in modes:
        rows = rows.assign(**letter_picks(model, tokenizer, rows, style, batch_size, f"{desc} letter"))
    if "loglikelihood" in modes:
        lls = option_loglikelihoods(model, tokenizer, rows, style, batch_size, f"{desc} log-likelihood")
        picks = [choose(ll, list(o)) for ll, o in zip(lls, rows["options"], strict=True)]
        rows["option_loglikelihoods"] = [ll.round(4).tolist() for ll in lls]
        rows["ll_pred"] = [p for p, _ in picks]
        rows["ll_norm_pred"] = [p for _, p in picks]
        rows["ll_acc"] = (rows["ll_pred"] == rows["answer_index"]).astype(float)
        rows["ll_acc_norm"] = (rows["ll_norm_pred"] == rows["answer_index"]).astype(float)
    if "generative" in modes:
        rows = rows.assign(
            **generative_picks(model, tokenizer, rows, max_new_tokens, batch_size, f"{desc} generate")
        )
    if "leaderboard" in modes:
        answer = local_answers(model, tokenizer, leaderboard_max_new_tokens, batch_size)
        rows = rows.assign(**ask_rounds(rows, answer, f"{desc} leaderboard"))
    if perturbation and set(modes) & set(PERTURBED):
        copy = build_prompts(perturb(questions, seed), style, tokenizer, seed)
        if "letter" in modes:
            picked = letter_picks(model, tokenizer, copy, style, batch_size, f"{desc} letter, perturbed")
            rows["letter_acc_perturbed"] = picked["letter_acc"]
        if "generative" in modes:
            picked = generative_picks(
                model, tokenizer, copy, max_new_tokens, batch_size, f"{desc} generate, perturbed"
            )
            rows["gen_acc_perturbed"] = picked["gen_acc"]
    return rows


# --- summaries ------------------------------------------------------------------------------------

# The subsets every accuracy is reported on: a column and the values it keeps (None: every question).
# sel / el are FailureSensorIQ's (run_eval.py; its 50-question sample spells the labels in the singular).
SUBSETS = {
    "all": None,
    "sel": ("relevancy", ("relevant_sensors_for_failure_mode", "relevant_sensor_for_failure_mode")),
    "el": ("relevancy", ("irrelevant_sensors_for_failure_mode", "irrelevant_sensor_for_failure_mode")),
    "sel_pooled": ("form", ("selection",)),
    "el_pooled": ("form", ("elimination",)),
}


def subset(scored: pd.DataFrame, key: str) -> np.ndarray:
    """Which rows of `scored` SUBSETS[key] keeps."""
    if SUBSETS[key] is None:
        return np.ones(len(scored), bool)
    column, values = SUBSETS[key]
    return scored[column].isin(values).to_numpy()


def summarise(scored: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> tuple[dict, dict]:
    """Per scorer: accuracy on each of SUBSETS with cluster-bootstrap 95% intervals (and Acc_Perturb,
    Consistency, undecided answers where they apply); and the breakdown per asset, direction, form
    and option count, each with its interval."""
    groups = clusters(scored)
    headline: dict[str, Any] = {"questions": len(scored)}
    breakdown: dict[str, Any] = {}
    for scorer, column in SCORERS.items():
        if column not in scored:
            continue
        right = scored[column].to_numpy(float)
        result: dict[str, Any] = {}
        for key in SUBSETS:
            keep = subset(scored, key)
            if keep.any():
                result[f"acc_{key}"] = round(float(right[keep].mean()), 4)
                result[f"acc_{key}_ci95"] = bootstrap_ci(right[keep], groups[keep], resamples, seed)
                result[f"questions_{key}"] = int(keep.sum())
        # what the set can tell whatever the variant: two models' accuracies that differ by this
        # much are told apart with 80% power, unpaired (a paired test with few discordant questions
        # tells less; `vs_base` has each variant's own)
        spread = bootstrap_means(right, groups, resamples, seed).std()
        result["mde_all"] = round(Z_POWER * math.sqrt(2) * float(spread), 4)
        if f"{column}_perturbed" in scored:
            perturbed = scored[f"{column}_perturbed"].to_numpy(float)
            both = right * perturbed
            result["acc_perturb"] = round(float(perturbed.mean()), 4)
            result["acc_perturb_ci95"] = bootstrap_ci(perturbed, groups, resamples, seed)
            result["consistency"] = round(float(both.mean()), 4)
            result["consistency_ci95"] = bootstrap_ci(both, groups, resamples, seed)
        if scorer == "letter" and (scored["answer_index"] < 0).any():  # multi-correct: the set, and F1
            result["f1"] = round(float(scored["letter_f1"].mean()), 4)
            result["f1_ci95"] = bootstrap_ci(scored["letter_f1"], groups, resamples, seed)
        if scorer == "generative":
            result["undecided"] = int(scored["undecided"].sum())
        headline[scorer] = result
        breakdown[scorer] = {
            f"by_{by}": {
                str(value): {
                    "questions": len(part),
                    "acc": round(float(part[column].mean()), 4),
                    "ci95": bootstrap_ci(part[column], groups[part.index], resamples, seed),
                }
                for value, part in scored.reset_index(drop=True).groupby(key, sort=True)
            }
            for by, key in (
                ("asset", "asset_name"),
                ("direction", "direction"),
                ("form", "form"),
                ("options", scored["options"].map(len).to_numpy()),
            )
        }
    return headline, breakdown


def compare(scored: pd.DataFrame, base: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per scorer that scored both (the same questions, by id), the paired difference from `base`,
    overall and on each of SUBSETS."""
    if sorted(scored["id"]) != sorted(base["id"]):
        raise ValueError(
            f"paired comparison needs the same questions: {len(scored)} vs {len(base)} "
            f"({len(set(scored['id']) ^ set(base['id']))} differ); score both with the same mcqa params"
        )
    base = base.set_index("id").loc[scored["id"]].reset_index()
    groups = clusters(scored)
    result: dict[str, Any] = {}
    for scorer, column in SCORERS.items():
        if any(column not in frame or frame[column].isna().all() for frame in (scored, base)):
            continue  # a mode this set was not scored in, on either side (a frame of several sets
            # holds a column for every mode scored on any of them)
        result[scorer] = {}
        for key in SUBSETS:
            keep = subset(scored, key)
            if keep.any():
                result[scorer][key] = paired_difference(
                    scored[column].to_numpy()[keep],
                    base[column].to_numpy()[keep],
                    groups[keep],
                    resamples,
                    seed,
                )
    return result


# --- a model over every question set ---------------------------------------------------------------


def evaluate_model(
    model_path: str | Path,
    question_sets: dict[str, pd.DataFrame],
    params: dict[str, Any],
    desc: str = "",
) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame]:
    """Headline metrics and breakdown per question set, and every question's prediction (one frame,
    a `set` column). `params` is params.yaml `mcqa:`: per question set its sample size (0: all),
    modes and whether a perturbed copy is scored; a set it does not name is not scored."""
    model, tokenizer = load_model(model_path, params["dtype"])
    style = prompt_style(tokenizer, params["prompt_style"], params["num_fewshot"])
    adapter = Path(model_path, "adapter_config.json")
    metrics: dict[str, Any] = {
        "model": str(model_path),
        "base_model": json.loads(adapter.read_text())["base_model_name_or_path"]
        if adapter.exists()
        else str(model_path),
        "prompt_style": "chat" if style.chat else f"{style.num_fewshot}-shot",
    }
    breakdowns, predictions = {}, []
    for name, questions in question_sets.items():
        if name not in params["sets"]:
            continue
        setting = params["sets"][name]
        sample = stratified_sample(questions, setting["sample"], params["seed"])
        scored = score_questions(
            model,
            tokenizer,
            sample,
            style,
            tuple(setting["modes"]),
            params["batch_size"],
            params["max_new_tokens"],
            params["seed"],
            setting["perturbation"],
            desc=f"{desc} {name}",
            leaderboard_max_new_tokens=params["leaderboard_max_new_tokens"],
        )
        headline, breakdowns[name] = summarise(scored, params["bootstrap_resamples"], params["seed"])
        metrics[name] = {"of": len(questions), "modes": list(setting["modes"]), **headline}
        predictions.append(scored.drop(columns=["context", "prompt"]).assign(set=name))
    return metrics, breakdowns, pd.concat(predictions, ignore_index=True)


def compare_with_base(
    metrics: dict[str, Any], predictions: pd.DataFrame, base: pd.DataFrame, params: dict[str, Any]
) -> dict[str, Any]:
    """`metrics` with each set's paired comparison against the base model's predictions added."""
    for name, scored in predictions.groupby("set", sort=False):
        metrics[name]["vs_base"] = compare(
            scored.reset_index(drop=True),
            base[base["set"] == name].reset_index(drop=True),
            params["bootstrap_resamples"],
            params["seed"],
        )
    return metrics
