"""MCQA prompt formats: the log-likelihood context and the lettered prompt of each question, chat
(instruct models, zero-shot) or k-shot (base models, examples from other assets so no answer leaks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

INSTRUCTION = "Answer this question about industrial condition monitoring."
GENERATIVE_INSTRUCTION = "Reply with the letter of the correct option only."
MULTI_INSTRUCTION = "Reply with the letters of the {k} correct options only."


@dataclass(frozen=True)
class PromptStyle:
    chat: bool  # the tokenizer's chat template, zero-shot; else k-shot plain text
    num_fewshot: int = 5
    # between the context and an option's text (lm-eval's target_delimiter), and before a letter
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


def lettered_text(question: str, options: list[str], labels: list[str]) -> str:
    lines = [f"Question: {question}"] + [f"{label}. {o}" for label, o in zip(labels, options, strict=True)]
    return "\n".join(lines + ["Answer:"])


def chat_message(question: str, options: list[str], labels: list[str], correct: list[bool]) -> str:
    """The user turn of a lettered chat prompt: what an instruct student reads through its template
    and a teacher endpoint is sent as its one message, so that the two answer the same words."""
    k = int(sum(correct))
    reply = GENERATIVE_INSTRUCTION if k == 1 else MULTI_INSTRUCTION.format(k=k)
    lettered = lettered_text(question, options, labels).removesuffix("\nAnswer:")
    return f"{INSTRUCTION}\n{lettered}\n{reply}"


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


def question_rows(questions: pd.DataFrame) -> pd.DataFrame:
    """The questions indexed 0..n-1, each with its option labels and which options are correct."""
    rows = questions.reset_index(drop=True)
    if "option_ids" not in rows:
        rows = rows.assign(option_ids=[list("ABCDEFGHIJ"[: len(o)]) for o in rows["options"]])
    if "correct" not in rows:
        rows = rows.assign(
            correct=[
                [j == a for j in range(len(o))]
                for o, a in zip(rows["options"], rows["answer_index"], strict=True)
            ]
        )
    return rows


def build_prompts(
    questions: pd.DataFrame, style: PromptStyle, tokenizer: PreTrainedTokenizerBase, seed: int = 0
) -> pd.DataFrame:
    """Per question, the log-likelihood context and the lettered prompt (letter and generative modes)."""
    rows = question_rows(questions)
    shots = fewshot_indices(rows, style.num_fewshot, seed)
    contexts, prompts = [], []
    for i, row in rows.iterrows():
        labels = list(row.option_ids)
        if style.chat:
            contexts.append(_chat(tokenizer, f"{INSTRUCTION}\n{cloze_text(row.question)}"))
            prompts.append(
                _chat(tokenizer, chat_message(row.question, list(row.options), labels, row.correct))
            )
            continue
        examples = [rows.iloc[j] for j in shots[i]]
        contexts.append(
            "\n\n".join(
                [f"{cloze_text(e.question)} {_answers(e.options, e.correct)}" for e in examples]
                + [cloze_text(row.question)]
            )
        )
        prompts.append(
            "\n\n".join(
                [
                    f"{lettered_text(e.question, list(e.options), list(e.option_ids))} "
                    f"{_answers(e.option_ids, e.correct)}"
                    for e in examples
                ]
                + [lettered_text(row.question, list(row.options), labels)]
            )
        )
    return rows.assign(context=contexts, prompt=prompts)


def _answers(values: list[str], correct: list[bool]) -> str:
    """An example's answer: its correct option (or label), or all of them for a multi-correct question."""
    return ", ".join(v for v, c in zip(values, correct, strict=True) if c)


def _chat(tokenizer: PreTrainedTokenizerBase, content: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
