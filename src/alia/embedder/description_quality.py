"""How good the entity descriptions that augment the embedder's queries are (the embedder paper's
Appendix C checks the same three things of its LLM-written descriptions):

- `description_words`: its length in words;
- `description_perplexity`: its perplexity under a reference language model (a student's base
  model): high for garbled or off-language text;
- `description_groundedness`: the share of its content words (4 letters or more, not a stop word)
  found in the names of the entity and of its neighbours in the tasks' graph (a query entity and the
  items relevant to it), i.e. how much of what it says is about things the tables connect it to.

A filter (`max_perplexity`, `min_groundedness`) marks a description `rejected` with its reason; a
rejected description never augments a query.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

QUALITY_COLUMNS = ["description_words", "description_perplexity", "description_groundedness", "rejected"]
FILTERS = {
    "max_perplexity": lambda df, x: df["description_perplexity"] > x,
    "min_groundedness": lambda df, x: df["description_groundedness"] < x,
}
_STOP = {
    *("that", "this", "with", "from", "into", "which", "used", "uses", "using", "their", "there", "these"),
    *("those", "they", "have", "been", "being", "other", "such", "than", "also", "more", "most", "when"),
    *("where", "while", "about", "after", "before", "between", "under", "over", "each", "both", "only"),
    *("very", "often", "type", "kind", "part", "form", "refers", "refer"),
}


def _content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z]{4,}", text.lower()) if w not in _STOP]


def _stems(text: str) -> set[str]:
    return {w[:5] for w in _content_words(text)}  # "transformer" and "transformers" alike


def neighbours(rows: pd.DataFrame) -> dict[str, set[str]]:
    """Each entity's neighbours in the tasks' graph: a query's entities and its relevant items."""
    graph: dict[str, set[str]] = defaultdict(set)
    for entities, relevant in zip(rows["entities"], rows["relevant"], strict=True):
        for entity in entities:
            graph[entity] |= set(relevant)
            for item in relevant:
                graph[item].add(entity)
    return graph


def groundedness(description: str, entity: str, near: set[str]) -> float:
    words = _content_words(description)
    if not words:
        return float("nan")
    known = _stems(" ".join([entity, *near]))
    return sum(w[:5] in known for w in words) / len(words)


@torch.no_grad()
def perplexities(texts: list[str], model_dir: str | Path, batch_size: int = 16) -> list[float]:
    """Each text's perplexity under the causal LM in `model_dir` (float32; NaN for an empty text)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out: list[float] = []
    for start in tqdm(range(0, len(texts), batch_size), desc="description perplexity", unit="batch"):
        batch = texts[start : start + batch_size]
        encoded = tokenizer([t or " " for t in batch], return_tensors="pt", padding=True)
        logits = model(**encoded).logits[:, :-1]
        targets, mask = encoded["input_ids"][:, 1:], encoded["attention_mask"][:, 1:].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        mean = (nll * mask).sum(1) / mask.sum(1).clamp(min=1)
        out += [
            math.exp(m) if t and n > 0 else float("nan")
            for m, t, n in zip(mean.tolist(), batch, mask.sum(1), strict=True)
        ]
    return out


def check_descriptions(
    entities: pd.DataFrame, rows: pd.DataFrame, model_dir: str | Path, filters: dict | None = None
) -> pd.DataFrame:
    """embed_tasks' descriptions with QUALITY_COLUMNS; `rejected` names the first filter a description
    fails ("" where it passes or has none)."""
    filters = filters or {}
    if unknown := set(filters) - set(FILTERS):
        raise ValueError(
            f"embed_tasks.filters: unknown setting(s) {sorted(unknown)}; known: {sorted(FILTERS)}"
        )
    out = entities.copy()
    texts = out["description"].fillna("").tolist()
    graph = neighbours(rows)
    out["description_words"] = [len(t.split()) for t in texts]
    out["description_perplexity"] = perplexities(texts, model_dir)
    out["description_groundedness"] = [
        groundedness(t, e, graph.get(e, set())) for t, e in zip(texts, out["entity"], strict=True)
    ]
    out["rejected"] = ""
    for name, fails in FILTERS.items():
        if filters.get(name) is not None:
            failing = fails(out, filters[name]).to_numpy(bool) & (out["rejected"] == "").to_numpy()
            out.loc[failing, "rejected"] = name
    return out


def summary(entities: pd.DataFrame) -> dict:
    """Per source of description (shared, teacher): count, median words, perplexity and groundedness,
    and the rejected."""
    described = entities[entities["description"].fillna("") != ""]
    return {
        str(source): {
            "descriptions": len(group),
            "median_words": float(np.median(group["description_words"])),
            "median_perplexity": round(float(group["description_perplexity"].median()), 2),
            "mean_groundedness": round(float(group["description_groundedness"].mean()), 3),
            "rejected": int((group["rejected"] != "").sum()),
        }
        for source, group in described.groupby("source")
    }
