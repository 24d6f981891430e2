"""The causal-LM engine behind the MCQA scorer: a checkpoint (or a merged adapter) loaded at the
precision the hardware computes, and three calls on it: next-token log-probabilities of given
candidates, log-likelihoods of continuations (options packed after one pass of their shared context),
and greedy generation. The scorer asks nothing else of a model, so another engine (lm-eval's, an
endpoint) can stand in without touching prompts or statistics."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from alia.core.models import require_model
from alia.core.precision import resolve_dtype

MIN_SHARED_PREFIX = 8  # tokens: below this a shared prefix is not worth its cache copies


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
