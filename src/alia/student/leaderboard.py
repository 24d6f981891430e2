"""FailureSensorIQ's leaderboard protocol, as its `run_eval.py` runs it (perteval's
`MultipleChoiceQuestion.get_prompt` and `get_mcq_llm_answer`, chain of thought `cot_standard`):

- a step-by-step prompt that asks for a reasoning per option and the answer as a JSON list of labels,
  after the system turn "You are a helpful assistant.", at temperature 0;
- the chosen options read from the first JSON object of the reply (a label chosen when it is `in`
  the object's "answer"), as perteval reads them, its repair of unquoted keys included;
- at most 3 asks: an unparseable reply is answered, in the same conversation, with "Failed to
  extract proper json block as requested";
- right only on an exact match of the chosen set; a reply that never parses chooses nothing, so it
  is wrong, never dropped.

Two engines answer the same conversations: a local causal LM on its chat template (`local_answers`)
and an endpoint through the one LLM client (alia.student.endpoint: cached, counted).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pandas as pd
from transformers import PreTrainedTokenizerBase

from alia.student.engine import generate

SYSTEM = "You are a helpful assistant."  # perteval's ChatGPT.refresh()
TRIGGER = "Let's think Step by Step"  # run_eval.py: cot="cot_standard"
REASK = "Failed to extract proper json block as requested"
MAX_ASKS = 3  # perteval's max_retry: asks in all, the first included
JSON_BLOCK = re.compile(r'[{]\s*"[^{]*[}]')
Message = dict[str, str]  # as alia.llm.cache's: this module serves local models too, without the client
# a conversation per question -> the replies, in order
Answerer = Callable[[list[list[Message]], str], list[str]]


def leaderboard_prompt(question: str, options: list[str], labels: list[str]) -> str:
    """perteval's `get_prompt` for a "choice" question with a trigger statement, word for word."""
    prompt = (
        "Please select the correct option(s) from the following options given the question. "
        f"To solve the problem, follow the {TRIGGER} reasoning strategy.\n"
        f"Question: {question}\nOptions:\n"
        + "".join(f"{label} {option}\n" for label, option in zip(labels, options, strict=True))
        + '{"option_a": "<Reasoning for option a>", "option_b": "<Reasoning for option b>", ..., '
        '"answer": <the list of selected option, e.g., ["A", "B", "C", "D", "E"]>}'
    )
    return prompt + "\nYour output in a single line:"


def _repair(block: str) -> str:
    """perteval's fix_json_string: quote bare reasoning/answer keys and a bare reasoning value, and
    put a missing comma before "answer"."""
    block = re.sub(r"(\breasoning\b|\banswer\b):", r'"\1":', block)
    block = re.sub(
        r'(?<="reasoning":\s)([^"\[{].*?)(?=,?\s*"?answer")',
        lambda m: f'"{m.group(0).strip()}"',
        block,
        flags=re.DOTALL,
    )
    return re.sub(r'("reasoning":.*?[^}],?)\s*("answer":)', r"\1, \2", block, flags=re.DOTALL)


def read_choice(reply: str, labels: list[str]) -> list[bool]:
    """Which options a reply chooses; ValueError when it holds no JSON object with an "answer"."""
    blocks = JSON_BLOCK.findall(reply.replace("\n", " "))
    if not blocks:
        raise ValueError("no JSON object in the reply")
    try:
        try:
            answer = json.loads(blocks[0])
        except json.JSONDecodeError:
            answer = json.loads(_repair(blocks[0]))
        return [label in answer["answer"] for label in labels]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"unusable JSON answer: {type(error).__name__}: {error}") from None


def ask_rounds(rows: pd.DataFrame, answer: Answerer, desc: str = "leaderboard") -> dict[str, list]:
    """The protocol over `rows` (options, option_ids, correct): every question asked, the unparsed
    re-asked in their own conversations, up to MAX_ASKS in all. Columns for the scored frame."""
    labels = [list(ids) for ids in rows["option_ids"]]
    conversations: list[list[Message]] = [
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": leaderboard_prompt(q, list(o), ids)},
        ]
        for q, o, ids in zip(rows["question"], rows["options"], labels, strict=True)
    ]
    chosen: list[list[bool] | None] = [None] * len(rows)
    replies, asks = [""] * len(rows), [0] * len(rows)
    pending = list(range(len(rows)))
    for ask in range(1, MAX_ASKS + 1):
        if not pending:
            break
        retry = []
        for i, reply in zip(
            pending, answer([conversations[i] for i in pending], f"{desc} ask {ask}"), strict=True
        ):
            replies[i], asks[i] = reply, ask
            try:
                chosen[i] = read_choice(reply, labels[i])
            except ValueError:
                conversations[i] += [
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": REASK},
                ]
                retry.append(i)
        pending = retry
    return {
        "leaderboard_answer": replies,
        "leaderboard_asks": asks,
        "leaderboard_invalid": [c is None for c in chosen],
        "leaderboard_pred": [[j for j, x in enumerate(c or []) if x] for c in chosen],
        "leaderboard_acc": [
            float(c is not None and list(c) == list(map(bool, gold)))
            for c, gold in zip(chosen, rows["correct"], strict=True)
        ],
    }


def local_answers(
    model: Any, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int, batch_size: int
) -> Answerer:
    """Greedy replies of a local causal LM, each conversation through its chat template."""

    def answer(conversations: list[list[Message]], desc: str) -> list[str]:
        prompts = [
            tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            for c in conversations
        ]
        return generate(model, tokenizer, prompts, max_new_tokens, batch_size, desc)

    return answer
