"""The agent's metrics: the items an answer names, matched through the project's canonical vocabulary,
scored against a gold list (entity-level precision, recall, F1 and the exact set), with 95% intervals
over question clusters and paired comparisons of two systems on the same questions.

An item is a name the tools return ("oil debris", "oil leakage / oil consumption"). An answer names
it by its own words, by one part of a compound label, or by a raw spelling the tables' vocabulary
maps to it ("Temparature sensors" names temperature), each word case-folded, spelling-fixed and
singularised (alia.kd.faithfulness.Vocabulary). A part that is itself another item names that item
only: "oil leakage" is the item oil leakage, not also "oil leakage / oil consumption".
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from alia.core.io import read_parquet
from alia.data.vocabulary import LABEL_SEPARATOR, Canonicaliser
from alia.kd.faithfulness import Vocabulary
from alia.student.stats import Z_POWER, bootstrap_ci, bootstrap_means

MEASURES = ("precision", "recall", "f1", "exact")


class ItemMatcher:
    """The items of `items` an answer names (see the module docstring)."""

    def __init__(
        self, items: Iterable[str], aliases: pd.DataFrame | None = None, rules: Canonicaliser | None = None
    ):
        rules = rules or Canonicaliser()
        self.vocabulary = Vocabulary(spelling=dict(rules.spelling))
        self.items = sorted(set(items))
        self._label: dict[str, str] = {}  # the vocabulary's spelling of an item -> the item
        spellings: dict[str, set[str]] = {item: {item} for item in self.items}  # a name -> its items
        for item in self.items:
            for part in item.split(LABEL_SEPARATOR):
                if part not in self.items:  # a part that is an item names that item only
                    spellings.setdefault(part, set()).add(item)
        if aliases is not None:  # raw spellings of the tables (name, alias) of a known name
            labels = {self.vocabulary.words(item) for item in self.items}
            for name, alias in zip(aliases["name"], aliases["alias"], strict=True):
                spelled_as_item = self.vocabulary.words(alias) in labels  # that item's, only
                if name in spellings and name in rules.names(alias) and not spelled_as_item:
                    spellings.setdefault(alias, set()).update(spellings[name])
        for spelling, named in spellings.items():
            for item in named:
                self.vocabulary.add("item", item, spelling)
                self._label[" ".join(self.vocabulary.words(item))] = item

    @classmethod
    def from_files(
        cls, tasks_file: str | Path, vocabulary_file: str | Path, rules_file: str | Path
    ) -> ItemMatcher:
        """Every item the tools can return (embed_tasks' tasks), with the tables' raw spellings."""
        tasks = read_parquet(tasks_file, columns=["task", "candidates"])
        from alia.agent.tools import TOOL_TASKS

        tool_tasks = tasks[tasks["task"].isin(list(TOOL_TASKS.values()))]
        return cls(
            {c for cs in tool_tasks["candidates"] for c in cs},
            read_parquet(vocabulary_file, columns=["name", "alias"]),
            Canonicaliser.from_yaml(rules_file),
        )

    def named(self, text: str) -> list[str]:
        """The items a free-text answer names, sorted, each once."""
        found = self.vocabulary.mentions(self.vocabulary.words(text))
        return sorted({self._label[name] for _, name in found})

    def canonical(self, names: Iterable[str]) -> list[str]:
        """Names as items: each name's items, or the name itself (normalised) where it names none."""
        out: set[str] = set()
        for name in names:
            out.update(self.named(name) or [" ".join(self.vocabulary.words(name))])
        return sorted(out)


def item_scores(predicted: Iterable[str], gold: Iterable[str]) -> dict[str, float]:
    """Entity-level precision, recall and F1 of a set of items, and whether it is the gold set. An empty
    answer scores 0 (it is also counted as no answer)."""
    predicted, gold = set(predicted), set(gold)
    hits = len(predicted & gold)
    precision = hits / len(predicted) if predicted else 0.0
    recall = hits / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "exact": float(predicted == gold)}


def summary(scored: pd.DataFrame, resamples: int = 1000) -> dict[str, Any]:
    """Each measure's mean with its 95% cluster-bootstrap interval, over all questions and per kind."""

    def block(rows: pd.DataFrame) -> dict[str, Any]:
        out: dict[str, Any] = {"questions": len(rows)}
        for measure in MEASURES:
            out[measure] = round(float(rows[measure].mean()), 4)
            out[f"{measure}_ci95"] = bootstrap_ci(
                rows[measure].to_numpy(), rows["cluster"].to_numpy(), resamples
            )
        return out

    return {"overall": block(scored), "kinds": {k: block(g) for k, g in scored.groupby("kind", sort=False)}}


def paired_f1(
    variant: pd.DataFrame, base: pd.DataFrame, resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """variant - base F1 on the questions both answered: the mean difference, its cluster-bootstrap 95%
    interval, the Wilcoxon signed-rank p over the clusters' mean differences (the questions of a
    cluster are not independent; zero differences split), the smallest difference detectable at 80%
    power, and n."""
    both = variant.merge(base, on=["id", "cluster"], suffixes=("", "_base"))
    diffs = (both["f1"] - both["f1_base"]).to_numpy()
    if not len(diffs):
        return {"questions": 0}
    means = bootstrap_means(diffs, pd.factorize(both["cluster"])[0], resamples, seed)
    per_cluster = pd.Series(diffs).groupby(both["cluster"].to_numpy()).mean().to_numpy()
    p = 1.0 if not np.any(per_cluster) else float(wilcoxon(per_cluster, zero_method="zsplit").pvalue)
    return {
        "delta_f1": round(float(diffs.mean()), 4),
        "ci95": [round(float(v), 4) for v in np.percentile(means, [2.5, 97.5])],
        "p_wilcoxon": float(f"{p:.4g}"),
        "better": int((diffs > 0).sum()),
        "worse": int((diffs < 0).sum()),
        "mde": round(Z_POWER * float(means.std()), 4),
        "questions": len(diffs),
        "clusters": len(per_cluster),
    }
