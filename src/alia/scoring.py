"""The MCQA scorer: how well a causal LM answers single-correct multiple-choice questions.

Two ways, as in FailureSensorIQ:
- log-likelihood: the summed log-probability of each option's text after the question; `acc` picks
  the highest, `acc_norm` the highest per character of the option (lm-evaluation-harness's
  definitions, and its tokenisation of a context/continuation pair, so the two agree:
  benchmarks/mcqa_vs_lm_eval.py);
- generative: the options are lettered, the model answers greedily and the letter is read from its
  answer; an answer with no letter, several letters or a claim that no option is right is undecided.

Base models get k-shot prompts (examples from other assets, so no answer leaks); instruct models
get their chat template, zero-shot.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from alia.mcqa import LETTERS

INSTRUCTION = "Answer this question about industrial condition monitoring."
GENERATIVE_INSTRUCTION = "Reply with the letter of the correct option only."


@dataclass(frozen=True)
class PromptStyle:
    chat: bool  # the tokenizer's chat template, zero-shot; else k-shot plain text
    num_fewshot: int = 5
    # between the context and an option's text: lm-eval's target_delimiter
    delimiter: str = " "


def prompt_style(
    tokenizer: PreTrainedTokenizerBase, style: str = "auto", num_fewshot: int = 5
) -> PromptStyle:
    """chat for a tokenizer with a chat template (instruct models), k-shot otherwise; or as `style` says."""
    if style not in ("auto", "chat", "kshot"):
        raise ValueError(f"prompt style {style!r}: expected auto, chat or kshot")
    chat = style == "chat" or (style == "auto" and bool(tokenizer.chat_template))
    return PromptStyle(chat=chat, num_fewshot=0 if chat else num_fewshot, delimiter="" if chat else " ")


def cloze_text(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def lettered_text(question: str, options: list[str]) -> str:
    lines = [f"Question: {question}"] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join(lines + ["Answer:"])


def fewshot_indices(questions: pd.DataFrame, k: int, seed: int) -> list[list[int]]:
    """For each question, k example questions about other assets (same draw for every model)."""
    if k == 0:
        return [[] for _ in range(len(questions))]
    rng = np.random.default_rng(seed)
    assets = questions["asset_name"].to_numpy()
    examples = []
    for i in range(len(questions)):
        pool = np.flatnonzero(assets != assets[i])
        if len(pool) < k:
            pool = np.delete(np.arange(len(questions)), i)  # a single-asset set: any other question
        examples.append(sorted(int(j) for j in rng.choice(pool, min(k, len(pool)), replace=False)))
    return examples


def build_prompts(
    questions: pd.DataFrame, style: PromptStyle, tokenizer: PreTrainedTokenizerBase, seed: int = 0
) -> pd.DataFrame:
    """Per question, the log-likelihood context and the generative prompt."""
    rows = questions.reset_index(drop=True)
    shots = fewshot_indices(rows, style.num_fewshot, seed)
    contexts, prompts = [], []
    for i, row in rows.iterrows():
        if style.chat:
            contexts.append(_chat(tokenizer, f"{INSTRUCTION}\n{cloze_text(row.question)}"))
            lettered = lettered_text(row.question, list(row.options)).removesuffix("\nAnswer:")
            prompts.append(_chat(tokenizer, f"{INSTRUCTION}\n{lettered}\n{GENERATIVE_INSTRUCTION}"))
            continue
        examples = [rows.iloc[j] for j in shots[i]]
        contexts.append(
            "\n\n".join(
                [f"{cloze_text(e.question)} {e.options[e.answer_index]}" for e in examples]
                + [cloze_text(row.question)]
            )
        )
        prompts.append(
            "\n\n".join(
                [f"{lettered_text(e.question, list(e.options))} {LETTERS[e.answer_index]}" for e in examples]
                + [lettered_text(row.question, list(row.options))]
            )
        )
    return rows.assign(context=contexts, prompt=prompts)


def _chat(tokenizer: PreTrainedTokenizerBase, content: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )


# --- model calls -------------------------------------------------------------------------------


def load_model(path: str | Path, dtype: str = "bfloat16") -> tuple[Any, PreTrainedTokenizerBase]:
    """A prepared checkpoint, or a LoRA adapter folder on top of the base it names (merged for speed)."""
    path = Path(path)
    torch_dtype = getattr(torch, dtype)
    if (path / "adapter_config.json").exists():
        from peft import PeftConfig, PeftModel

        base = PeftConfig.from_pretrained(path).base_model_name_or_path
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
        tokenizer = AutoTokenizer.from_pretrained(path if (path / "tokenizer_config.json").exists() else base)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return model, tokenizer


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # as lm-eval: the tokenizer's own special tokens, unless the text already starts with BOS
    bos = tokenizer.bos_token
    add_special = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """lm-eval's split: trailing spaces move to the continuation, and the continuation's tokens are
    those of the whole text past the context's (so a word-boundary merge is scored as the model sees it)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = _encode(tokenizer, context + continuation)
    context_ids = _encode(tokenizer, context)
    return context_ids, whole[len(context_ids) :]


@torch.inference_mode()
def loglikelihoods(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[tuple[str, str]],
    batch_size: int = 8,
    max_length: int | None = None,
    desc: str = "log-likelihood",
) -> np.ndarray:
    """The summed log-probability of each continuation given its context."""
    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
    encoded = []
    for context, continuation in pairs:
        context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
        # the last token is predicted, never fed: lm-eval's (context + continuation)[-(max+1):][:-1]
        whole = (context_ids + continuation_ids)[-(max_length + 1) :]
        encoded.append((whole[:-1], continuation_ids))
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))  # similar lengths batch together
    scores = np.zeros(len(encoded))
    pad = tokenizer.pad_token_id
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        batch = order[start : start + batch_size]
        width = max(len(encoded[i][0]) for i in batch)
        keep = max(len(encoded[i][1]) for i in batch)
        # left padding, so every continuation ends the row and only the last `keep` logits are needed
        input_ids = torch.tensor([[pad] * (width - len(encoded[i][0])) + encoded[i][0] for i in batch])
        mask = torch.tensor([[0] * (width - len(encoded[i][0])) + [1] * len(encoded[i][0]) for i in batch])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=input_ids.to(model.device),
            attention_mask=mask.to(model.device),
            position_ids=positions.to(model.device),
            logits_to_keep=keep,
        ).logits.cpu()
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for row, i in enumerate(batch):
            continuation = torch.tensor(encoded[i][1])
            picked = logprobs[row, keep - len(continuation) :].gather(-1, continuation[:, None])
            scores[i] = picked.sum().item()
    return scores


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int = 8,
    batch_size: int = 8,
    desc: str = "generate",
) -> list[str]:
    """Greedy answers, batched with left padding."""
    tokenizer.padding_side = "left"
    answers = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        batch = order[start : start + batch_size]
        texts = [prompts[i] for i in batch]
        add_special = not (tokenizer.bos_token and texts[0].startswith(tokenizer.bos_token))
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special).to(
            model.device
        )
        output = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        for row, i in enumerate(batch):
            answers[i] = tokenizer.decode(
                output[row, inputs["input_ids"].shape[1] :], skip_special_tokens=True
            )
    return answers


# --- reading answers and scoring -----------------------------------------------------------------

NONE_CLAIM = re.compile(
    r"\b(none of (the|these|them)|no (option|answer|choice) is|neither|all of (the|these) are wrong)\b", re.I
)
LETTER = re.compile(r"(?<![A-Za-z])[A-J](?![A-Za-z])")  # a capital letter standing alone
ARTICLE = re.compile(r"A [a-z]")  # "A reliability engineer ...": the article, not option A


def read_letter(answer: str, n_options: int) -> int | None:
    """The option an answer names, or None when it is undecided (no letter, several, or "none")."""
    # a base model runs on into the next k-shot question: only the first paragraph is its answer
    first = answer.strip().split("\n\n")[0].split("Question:")[0]
    if NONE_CLAIM.search(first):
        return None
    letters = {
        m.group()
        for m in LETTER.finditer(first)
        if LETTERS.index(m.group()) < n_options and not ARTICLE.match(first, m.start())
    }
    return LETTERS.index(letters.pop()) if len(letters) == 1 else None


def choose(lls: np.ndarray, options: list[str]) -> tuple[int, int]:
    """lm-eval's picks: the highest log-likelihood, and the highest per character of the option."""
    lengths = np.array([float(len(o)) for o in options])
    return int(np.argmax(lls)), int(np.argmax(np.asarray(lls) / lengths))


def bootstrap_ci(values: np.ndarray, resamples: int = 1000, seed: int = 0) -> list[float]:
    """The 95% percentile bootstrap interval of a mean, resampling questions."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return [round(float(v), 4) for v in np.percentile(means, [2.5, 97.5])]


def option_loglikelihoods(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    rows: pd.DataFrame,
    style: PromptStyle,
    batch_size: int = 8,
    desc: str = "log-likelihood",
) -> list[np.ndarray]:
    """Per question of `build_prompts`' rows, the log-likelihood of each option after its context
    (every option of every question in one batched pass)."""
    pairs = [(r.context, style.delimiter + o) for r in rows.itertuples() for o in r.options]
    flat = loglikelihoods(model, tokenizer, pairs, batch_size, desc=desc)
    bounds = np.cumsum([0] + [len(o) for o in rows["options"]])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def score_questions(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    questions: pd.DataFrame,
    style: PromptStyle,
    modes: tuple[str, ...] = ("loglikelihood", "generative"),
    batch_size: int = 8,
    max_new_tokens: int = 8,
    seed: int = 0,
    desc: str = "",
) -> pd.DataFrame:
    """One row per question with the model's picks and whether they are right."""
    rows = build_prompts(questions, style, tokenizer, seed)
    if "loglikelihood" in modes:
        lls = option_loglikelihoods(model, tokenizer, rows, style, batch_size, f"{desc} log-likelihood")
        picks = [choose(ll, list(o)) for ll, o in zip(lls, rows["options"], strict=True)]
        rows["option_loglikelihoods"] = [ll.round(4).tolist() for ll in lls]
        rows["pred"] = [p for p, _ in picks]
        rows["pred_norm"] = [p for _, p in picks]
        rows["acc"] = (rows["pred"] == rows["answer_index"]).astype(float)
        rows["acc_norm"] = (rows["pred_norm"] == rows["answer_index"]).astype(float)
    if "generative" in modes:
        answers = generate(
            model, tokenizer, rows["prompt"].tolist(), max_new_tokens, batch_size, f"{desc} generate"
        )
        letters = [read_letter(a, len(o)) for a, o in zip(answers, rows["options"], strict=True)]
        rows["answer"] = answers
        rows["answer_letter"] = [-1 if x is None else x for x in letters]
        rows["undecided"] = [x is None for x in letters]
        rows["exact_match"] = (rows["answer_letter"] == rows["answer_index"]).astype(float)
    return rows


def summarise(scored: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracies with 95% bootstrap intervals, and the same per asset, direction and form."""
    summary: dict[str, Any] = {"questions": len(scored), **_metrics(scored, resamples, seed)}
    for column in ("asset_name", "direction", "form"):
        summary[f"by_{column.removesuffix('_name')}"] = {
            str(value): {"questions": len(group), **_metrics(group, 0, seed)}
            for value, group in scored.groupby(column, sort=True)
        }
    return summary


def _metrics(scored: pd.DataFrame, resamples: int, seed: int) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for column in ("acc", "acc_norm", "exact_match"):
        if column in scored:
            metrics[column] = round(float(scored[column].mean()), 4)
            if resamples:
                metrics[f"{column}_ci95"] = bootstrap_ci(scored[column].to_numpy(), resamples, seed)
    if "undecided" in scored:
        decided = scored[~scored["undecided"]]
        metrics["undecided"] = int(scored["undecided"].sum())
        metrics["accuracy_decided"] = round(float(decided["exact_match"].mean()), 4) if len(decided) else None
    return metrics


# --- a model over every question set, and the comparison across variants -------------------------


def evaluate_model(
    model_path: str | Path, question_sets: dict[str, pd.DataFrame], params: dict[str, Any], desc: str = ""
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics per question set, and every question's prediction (one frame, a `set` column)."""
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
    predictions = []
    for name, questions in question_sets.items():
        if 0 < params["max_questions"] < len(questions):  # a quick look: a seeded sample of each set
            questions = questions.sample(params["max_questions"], random_state=params["seed"]).sort_index()
        scored = score_questions(
            model,
            tokenizer,
            questions,
            style,
            tuple(params["modes"]),
            params["batch_size"],
            params["max_new_tokens"],
            params["seed"],
            desc=f"{desc} {name}",
        )
        metrics[name] = summarise(scored, params["bootstrap_resamples"], params["seed"])
        predictions.append(scored.drop(columns=["context", "prompt"]).assign(set=name))
    return metrics, pd.concat(predictions, ignore_index=True)


SUMMARY_COLUMNS = {
    "acc": "acc (LL)",
    "acc_norm": "acc_norm (LL)",
    "exact_match": "exact match (gen)",
    "accuracy_decided": "acc decided (gen)",
    "undecided": "undecided",
}


def summary_table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table per question set: every variant's accuracies, with the change from the untuned
    model it was trained from."""
    untuned = {r["model"]: name for name, r in results.items() if r["model"] == r["base_model"]}
    sets = sorted(
        {k for r in results.values() for k, v in r.items() if isinstance(v, dict) and "questions" in v}
    )
    lines = ["# MCQA: students before and after training", ""]
    for question_set in sets:
        rows = {name: r[question_set] for name, r in results.items() if question_set in r}
        n = next(iter(rows.values()))["questions"]
        metrics = [m for m in SUMMARY_COLUMNS if any(m in r for r in rows.values())]
        lines += [f"## {question_set} ({n} questions)", ""]
        lines += [
            "| variant | trained from | prompt | " + " | ".join(SUMMARY_COLUMNS[m] for m in metrics) + " |"
        ]
        lines += ["|---" * (len(metrics) + 3) + "|"]
        for name, r in sorted(
            rows.items(), key=lambda kv: (results[kv[0]]["base_model"], kv[0] not in untuned.values(), kv[0])
        ):
            base = untuned.get(results[name]["base_model"])
            cells = []
            for m in metrics:
                value = r.get(m)
                cell = "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
                if f"{m}_ci95" in r:
                    cell += " [{:.2f}, {:.2f}]".format(*r[f"{m}_ci95"])
                if base and base != name and m in ("acc", "acc_norm", "exact_match") and value is not None:
                    cell += f" ({value - results[base][question_set][m]:+.3f})"
                cells.append(cell)
            origin = "-" if name == base else (base or results[name]["base_model"])
            lines.append(
                f"| {name} | {origin} | {results[name]['prompt_style']} | " + " | ".join(cells) + " |"
            )
        lines.append("")
    lines.append("LL: log-likelihood of each option (lm-evaluation-harness acc / acc_norm); gen: the model's")
    lines.append("lettered answer. [a, b]: 95% bootstrap interval; (+x): change from the untuned model.")
    return "\n".join(lines) + "\n"
