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
  with no letter, several letters or a claim that no option is right is undecided.

Every scorer reports Acc_All, Acc_Sel (selection questions) and Acc_El (elimination questions), and
per asset, with 95% intervals from a bootstrap over clusters of questions built from the same asset
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

import copy
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import binomtest
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from alia.mcqa import perturb, stratified_sample
from alia.models import require_model
from alia.precision import resolve_dtype

INSTRUCTION = "Answer this question about industrial condition monitoring."
GENERATIVE_INSTRUCTION = "Reply with the letter of the correct option only."
MULTI_INSTRUCTION = "Reply with the letters of the {k} correct options only."
MODES = ("letter", "loglikelihood", "generative")
# scorer -> its per-question column; the modes that make them
SCORERS = {
    "letter": "letter_acc",
    "loglikelihood": "ll_acc",
    "loglikelihood_norm": "ll_acc_norm",
    "generative": "gen_acc",
}
PERTURBED = ("letter", "generative")  # the scorers that read letters, so relabelling can move them
MIN_SHARED_PREFIX = 8  # tokens: below this a shared prefix is not worth its cache copies
Z_POWER = 2.8  # z(0.975) + z(0.80): a difference of 2.8 standard errors is found 80% of the time


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
    """Per question, the log-likelihood context and the lettered prompt (letter and generative modes)."""
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
    shots = fewshot_indices(rows, style.num_fewshot, seed)
    contexts, prompts = [], []
    for i, row in rows.iterrows():
        labels, k = list(row.option_ids), int(sum(row.correct))
        reply = GENERATIVE_INSTRUCTION if k == 1 else MULTI_INSTRUCTION.format(k=k)
        if style.chat:
            contexts.append(_chat(tokenizer, f"{INSTRUCTION}\n{cloze_text(row.question)}"))
            lettered = lettered_text(row.question, list(row.options), labels).removesuffix("\nAnswer:")
            prompts.append(_chat(tokenizer, f"{INSTRUCTION}\n{lettered}\n{reply}"))
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


# --- model calls -------------------------------------------------------------------------------


def load_model(path: str | Path, dtype: str = "auto") -> tuple[Any, PreTrainedTokenizerBase]:
    """A prepared checkpoint, or a LoRA adapter folder on top of the base it names, merged into it:
    an unmerged adapter scores at half its base's speed. `dtype` as alia.precision resolves it."""
    path = require_model(path)
    torch_dtype = getattr(torch, resolve_dtype(dtype))
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


def label_token(tokenizer: PreTrainedTokenizerBase, label: str, delimiter: str) -> int:
    """The one token that writes `label` as the model's next word (" A" after "Answer:", "A" after a
    chat template's assistant turn)."""
    ids = tokenizer(delimiter + label, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(
            f"option label {delimiter + label!r} is {len(ids)} tokens for this tokenizer: expected 1"
        )
    return ids[0]


def _prefix_cache(model: Any, ids: list[int], cache: Any = None) -> Any:
    """The key/value cache after `ids` (continuing `cache`, which it does not change)."""
    cache = copy.deepcopy(cache)
    past = cache.get_seq_length() if cache is not None else 0
    return model(
        input_ids=torch.tensor([ids], device=model.device),
        position_ids=torch.arange(past, past + len(ids), device=model.device)[None],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    ).past_key_values


def _continue(
    model: Any, cache: Any, shared: int, suffixes: list[list[int]], pad: int, keep: int
) -> torch.Tensor:
    """Logits of the last `keep` positions of each suffix (left-padded into one batch) after a
    `shared`-token cache (None: no cache), which every row continues from a copy of."""
    width = max(map(len, suffixes))
    input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in suffixes])
    mask = torch.tensor([[1] * shared + [0] * (width - len(s)) + [1] * len(s) for s in suffixes])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
    if cache is not None:
        cache = copy.deepcopy(cache)
        cache.batch_repeat_interleave(len(suffixes))
    return model(
        input_ids=input_ids.to(model.device),
        attention_mask=mask.to(model.device),
        position_ids=positions.to(model.device),
        past_key_values=cache,
        logits_to_keep=keep,
    ).logits


@torch.inference_mode()
def next_token_logprobs(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    candidates: list[list[int]],
    batch_size: int = 8,
    desc: str = "letter",
) -> list[np.ndarray]:
    """Per prompt, the log-probability of each candidate token as the next token: one forward pass
    per prompt, batched by length with left padding, only the last position's logits computed.

    The prompts' common prefix (a chat template's system turn and the instruction: a third of a
    D_eval prompt) runs once; every batch continues from a copy of its key/value cache."""
    encoded = [_encode(tokenizer, p) for p in prompts]
    if not encoded:
        return []
    shared = min(len(os.path.commonprefix(encoded)), min(map(len, encoded)) - 1)
    cache = _prefix_cache(model, encoded[0][:shared]) if shared >= MIN_SHARED_PREFIX else None
    shared = shared if cache is not None else 0
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # similar lengths batch together
    out: list[np.ndarray] = [np.zeros(0)] * len(encoded)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        batch = order[start : start + batch_size]
        suffixes = [encoded[i][shared:] for i in batch]
        logits = _continue(model, cache, shared, suffixes, tokenizer.pad_token_id, 1)[:, -1]
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        for row, i in enumerate(batch):
            out[i] = logprobs[row, candidates[i]].numpy()
    return out


@torch.inference_mode()
def loglikelihoods(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[tuple[str, str]],
    batch_size: int = 8,
    max_length: int | None = None,
    desc: str = "log-likelihood",
) -> np.ndarray:
    """The summed log-probability of each continuation given its context (lm-eval's loglikelihood).

    The continuations of one context (a question's options) are packed into one row behind it, each
    attending to the context and to itself only, so a question and all its options take one row of
    one forward pass (lm-eval runs the context again for every option); rows are batched by length,
    `batch_size` contexts a pass, and the part every context shares (a chat template's system turn
    and the instruction) runs once in all."""
    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for i, (context, continuation) in enumerate(pairs):
        context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
        if not context_ids:
            raise ValueError(f"pair {i}: empty context {context!r}: nothing predicts the continuation")
        if len(context_ids) + len(continuation_ids) > max_length + 1:
            raise ValueError(
                f"pair {i}: context and continuation are {len(context_ids) + len(continuation_ids)} "
                f"tokens: the model reads at most {max_length}"
            )
        groups.setdefault(tuple(context_ids), []).append((i, continuation_ids))
    scores = np.zeros(len(pairs))
    if not pairs:
        return scores
    contexts = list(groups)
    # each context keeps at least its last token: its logits predict every continuation's first
    overall = min(len(os.path.commonprefix(contexts)), min(map(len, contexts)) - 1)
    cache = _prefix_cache(model, list(contexts[0][:overall])) if overall >= MIN_SHARED_PREFIX else None
    overall = overall if cache is not None else 0
    rows = [(c[overall:], [(i, ids) for i, ids in groups[c] if ids]) for c in contexts]
    rows.sort(key=lambda r: (-len(r[0]), -sum(len(ids) for _, ids in r[1])))  # similar rows batch together
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, leave=False):
        batch = rows[start : start + batch_size]
        logits, predictors = _packed_forward(model, cache, overall, batch, tokenizer.pad_token_id)
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        for row, (_, members) in enumerate(batch):
            for (i, ids), positions in zip(members, predictors[row], strict=True):
                picked = logprobs[row, positions].gather(-1, torch.tensor(ids)[:, None])
                scores[i] = picked.sum().item()
    return scores


def _packed_forward(
    model: Any,
    cache: Any,
    shared: int,
    batch: list[tuple[tuple[int, ...], list[tuple[int, list[int]]]]],
    pad: int,
) -> tuple[torch.Tensor, list[list[list[int]]]]:
    """One forward pass over rows of a context (left-padded, after a `shared`-token cache) and its
    continuations packed behind it (their last token is only predicted, never fed). Returns the
    logits from each context's last position on, and per row and continuation the positions among
    them that predict the continuation's tokens."""
    context_width = max(len(context) for context, _ in batch)
    packed = [[t for _, ids in members for t in ids[:-1]] for _, members in batch]
    width = context_width + max(map(len, packed))
    input_ids, segments, positions, predictors = [], [], [], []
    for (context, members), tail in zip(batch, packed, strict=True):
        left, right = context_width - len(context), width - context_width - len(tail)
        input_ids.append([pad] * left + list(context) + tail + [pad] * right)
        segment, position, predicts, offset = [-1] * left + [0] * len(context), [0] * left, [], 0
        position += range(shared, shared + len(context))
        for j, (_, ids) in enumerate(members, start=1):
            segment += [j] * (len(ids) - 1)
            position += range(shared + len(context), shared + len(context) + len(ids) - 1)
            # the context's last position predicts the first token, each fed token the next
            predicts.append([0] + list(range(offset + 1, offset + len(ids))))
            offset += len(ids) - 1
        segments.append(segment + [-1] * right)
        positions.append(position + [0] * right)
        predictors.append(predicts)
    segment = torch.tensor(segments)
    query, key = segment[:, :, None], segment[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    # a token sees the context and its own continuation; padding sees only itself (never a row of -inf)
    allowed = causal & (key >= 0) & ((key == 0) | (key == query)) | torch.eye(width, dtype=torch.bool)
    allowed = torch.cat([torch.ones(len(batch), width, shared, dtype=torch.bool), allowed], dim=-1)
    # an additive mask: what the eager and SDPA attentions both take as a custom 4D mask
    mask = torch.zeros(allowed.shape, dtype=model.dtype).masked_fill(~allowed, torch.finfo(model.dtype).min)
    if cache is not None:
        cache = copy.deepcopy(cache)
        cache.batch_repeat_interleave(len(batch))
    logits = model(
        input_ids=torch.tensor(input_ids, device=model.device),
        attention_mask=mask[:, None].to(model.device),
        position_ids=torch.tensor(positions, device=model.device),
        past_key_values=cache,
        logits_to_keep=width - context_width + 1,
    ).logits
    return logits, predictors


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
) -> pd.DataFrame:
    """One row per question with each mode's pick and whether it is right; with `perturbation`, the
    letter and generative modes also on the perturbed copy (`*_perturbed` columns)."""
    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"scoring modes {sorted(unknown)}: expected some of {MODES}")
    rows = build_prompts(questions, style, tokenizer, seed)
    if (rows["answer_index"] < 0).any() and set(modes) != {"letter"}:
        raise ValueError("multi-correct questions are scored in letter mode only: modes [letter]")
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


# --- intervals and paired tests --------------------------------------------------------------------


def clusters(questions: pd.DataFrame) -> np.ndarray:
    """A cluster id per question: its asset and failure mode (the paraphrases of one fact are not
    independent); the question itself where its failure mode is unknown (published, expert files)."""
    keys = np.where(
        questions["failure_mode"].fillna("") != "",
        questions["asset_name"].astype(str) + "\x1f" + questions["failure_mode"].astype(str),
        "id\x1f" + questions["id"].astype(str),
    )
    return pd.factorize(keys)[0]


def bootstrap_means(values: np.ndarray, groups: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of `values` over `resamples` resamples of whole clusters (a cluster bootstrap)."""
    values = np.asarray(values, dtype=float)
    n_groups = int(groups.max()) + 1
    sums = np.bincount(groups, weights=values, minlength=n_groups)
    counts = np.bincount(groups, minlength=n_groups).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, (resamples, n_groups))
    weights = np.stack([np.bincount(d, minlength=n_groups) for d in draws]).astype(float)
    return (weights @ sums) / np.maximum(weights @ counts, 1)


def bootstrap_ci(
    values: np.ndarray, groups: np.ndarray | None = None, resamples: int = 1000, seed: int = 0
) -> list[float]:
    """The 95% percentile bootstrap interval of a mean, resampling clusters (each value its own
    cluster where `groups` is None)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return [float("nan"), float("nan")]
    groups = np.arange(len(values)) if groups is None else pd.factorize(np.asarray(groups))[0]
    means = bootstrap_means(values, groups, resamples, seed)
    return [round(float(v), 4) for v in np.percentile(means, [2.5, 97.5])]


def mcnemar_p(base: np.ndarray, variant: np.ndarray) -> float:
    """McNemar's exact two-sided p: the discordant pairs against a fair coin."""
    base, variant = np.asarray(base, bool), np.asarray(variant, bool)
    better, worse = int((variant & ~base).sum()), int((base & ~variant).sum())
    return 1.0 if better + worse == 0 else float(binomtest(better, better + worse, 0.5).pvalue)


def paired_difference(
    variant: np.ndarray, base: np.ndarray, groups: np.ndarray, resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """variant - base on the same questions: the difference, its cluster-bootstrap 95% interval,
    McNemar's p, and the smallest difference detectable (80% power, 5% two-sided) at this spread."""
    variant, base = np.asarray(variant, float), np.asarray(base, float)
    diffs = bootstrap_means(variant - base, pd.factorize(np.asarray(groups))[0], resamples, seed)
    return {
        "delta": round(float((variant - base).mean()), 4),
        "ci95": [round(float(v), 4) for v in np.percentile(diffs, [2.5, 97.5])],
        "p_mcnemar": float(f"{mcnemar_p(base, variant):.4g}"),  # small p values keep their digits
        "better": int(((variant == 1) & (base == 0)).sum()),
        "worse": int(((variant == 0) & (base == 1)).sum()),
        "mde": round(Z_POWER * float(diffs.std()), 4),
        "questions": len(variant),
    }


# --- summaries ------------------------------------------------------------------------------------

FORM_KEYS = {"all": None, "sel": "selection", "el": "elimination"}


def summarise(scored: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> tuple[dict, dict]:
    """Per scorer: Acc_All, Acc_Sel, Acc_El with cluster-bootstrap 95% intervals (and Acc_Perturb,
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
        for key, form in FORM_KEYS.items():
            keep = np.ones(len(scored), bool) if form is None else (scored["form"] == form).to_numpy()
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
    """Per scorer the paired difference from `base` (the same questions, by id), overall and for
    selection and elimination questions."""
    if sorted(scored["id"]) != sorted(base["id"]):
        raise ValueError(
            f"paired comparison needs the same questions: {len(scored)} vs {len(base)} "
            f"({len(set(scored['id']) ^ set(base['id']))} differ); score both with the same mcqa params"
        )
    base = base.set_index("id").loc[scored["id"]].reset_index()
    groups = clusters(scored)
    result: dict[str, Any] = {}
    for scorer, column in SCORERS.items():
        if column not in scored or column not in base or scored[column].isna().all():
            continue  # a mode this set was not scored in
        result[scorer] = {}
        for key, form in FORM_KEYS.items():
            keep = np.ones(len(scored), bool) if form is None else (scored["form"] == form).to_numpy()
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


# --- the comparison across variants -----------------------------------------------------------------

SCORER_LABELS = {
    "letter": "letter",
    "loglikelihood": "LL acc",
    "loglikelihood_norm": "LL acc_norm",
    "generative": "generative",
}


def _cell(value: float | None, interval: list[float] | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (" [{:.2f}, {:.2f}]".format(*interval) if interval else "")


def summary_table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table per question set: every model's Acc_All / Acc_Sel / Acc_El per scorer, and
    for a trained variant its paired difference from its base, with the interval, McNemar's p and
    the smallest difference the set can detect. Positive controls (leaks) get their own table."""
    sets = sorted({k for r in results.values() for k, v in r.items() if isinstance(v, dict) and "of" in v})
    lines = ["# MCQA: students before and after training", ""]
    for question_set in sets:
        rows = {name: r for name, r in results.items() if question_set in r}
        first = next(iter(rows.values()))[question_set]
        lines += [
            f"## {question_set}: {first['questions']} of {first['of']} questions",
            "",
        ]
        for title, members in (
            ("", {n: r for n, r in rows.items() if not r.get("leak")}),
            (
                "Positive controls: trained on D_eval itself (a deliberate leak; never a result)",
                {n: r for n, r in rows.items() if r.get("leak")},
            ),
        ):
            if not members:
                continue
            if title:
                lines += [f"### {title}", ""]
            lines += [
                "| model | scorer | Acc_All | Acc_Sel | Acc_El | Δ vs base [95% CI] | p (McNemar) | MDE "
                "| Acc_Perturb | Consistency |",
                "|---" * 10 + "|",
            ]
            for name, r in sorted(members.items(), key=lambda kv: ("base" in kv[1], kv[0])):
                summary = r[question_set]
                label = f"{name} (from {r['base']})" if "base" in r else name
                for scorer, text in SCORER_LABELS.items():
                    if scorer not in summary:
                        continue
                    s = summary[scorer]
                    paired = summary.get("vs_base", {}).get(scorer, {}).get("all")
                    acc_all = _cell(s.get("acc_all"), s.get("acc_all_ci95"))
                    if "f1" in s:
                        acc_all += f" (F1 {s['f1']:.3f})"
                    compared = (
                        f"{paired['delta']:+.3f} [{paired['ci95'][0]:+.3f}, {paired['ci95'][1]:+.3f}] "
                        f"| {paired['p_mcnemar']:.3g} | {paired['mde']:.3f}"
                        if paired
                        else f"- | - | {s['mde_all']:.3f}"
                        if "mde_all" in s
                        else "- | - | -"
                    )
                    cells = [
                        label,
                        text,
                        acc_all,
                        _cell(s.get("acc_sel"), s.get("acc_sel_ci95")),
                        _cell(s.get("acc_el"), s.get("acc_el_ci95")),
                        compared,
                        _cell(s.get("acc_perturb")),
                        _cell(s.get("consistency")),
                    ]
                    lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    lines += [
        "Acc_All / Acc_Sel / Acc_El: all, selection and elimination questions, with 95% intervals from a",
        "bootstrap over clusters of questions about the same asset and failure mode. Δ: the paired",
        "difference from the untuned model on the same questions; MDE: the smallest difference detected",
        "with 80% power at 5%: for a variant 2.8 standard errors of its Δ, for an untuned model the set's",
        "own (2.8 x sqrt 2 standard errors of its accuracy: two models scored independently).",
        "letter: each option's letter as the next token; LL: option log-likelihood (blind to NOT by",
        "construction); generative: the letter in the model's answer. Acc_Perturb / Consistency: on a",
        "copy with options reordered and relabelled, and right on both copies.",
        "Multi-correct questions: the exact set of letters, and per-option F1.",
    ]
    return "\n".join(lines) + "\n"
