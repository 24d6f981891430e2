"""Intervals and paired tests for per-question right/wrong: a bootstrap over clusters of questions
(paraphrases of one fact are not independent), McNemar's exact test, and the smallest difference a
set can detect."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

Z_POWER = 2.8  # z(0.975) + z(0.80): a difference of 2.8 standard errors is found 80% of the time


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
