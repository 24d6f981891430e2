"""The industrial embedder: fine-tuning a sentence-transformers model on the tasks of
alia.embedder.tasks (the train split; checkpoints chosen on validation), in the sentence-transformers
training examples' steps: the model, the pairs, the loss, the evaluator, the trainer, the save.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
import torch
from datasets import Dataset, DatasetDict
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.base.sampler import BatchSamplers, DefaultBatchSampler
from sentence_transformers.sentence_transformer import losses

from alia.core.io import replacing
from alia.core.models import require_model
from alia.core.params import Loss
from alia.embedder.evaluation import validation_evaluator

# The losses (sentence-transformers' names), each built from the model being trained, params.yaml
# `train_embedder:` and the pretrained model it starts from.
LOSSES: dict[str, Callable[[Any, dict[str, Any], str], Any]] = {
    # labelled pairs, no in-batch negatives; batches balanced to pos_ratio
    "contrastive": lambda model, params, base: losses.ContrastiveLoss(model, margin=params["margin"]),
    # in-batch negatives: a query's positive ranked above the batch's other items
    "mnrl": lambda model, params, base: losses.MultipleNegativesRankingLoss(model),
    # the same with large batches in small memory
    "cached_mnrl": lambda model, params, base: losses.CachedMultipleNegativesRankingLoss(
        model, mini_batch_size=params.get("mini_batch_size", 32)
    ),
    # skips in-batch items that the pretrained model, frozen, its guide, scores above the positive
    "gist": lambda model, params, base: losses.GISTEmbedLoss(
        model, guide=SentenceTransformer(base, device=model.device)
    ),
}
assert set(LOSSES) == set(get_args(Loss)), "alia.core.params.Loss lists the losses of LOSSES"
NEGATIVES = ("random", "hard")  # a query's negatives: sampled, or mined with the pretrained model


# --- training data -----------------------------------------------------------------------------


def training_pairs(
    tasks: pd.DataFrame,
    loss: str,
    negatives_per_query: int,
    seed: int,
    mined: dict[str, list[str]] | None = None,
) -> pd.DataFrame:
    """The train split as pairs: (query, item, label 1/0) for `contrastive`, (anchor, positive) for
    the in-batch losses. Negatives are `negatives_per_query` of a query's other candidates: sampled,
    or the first of `mined[query_id]` (hard_negatives); an in-batch loss gets one mined negative per
    pair as a third column."""
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r}: expected one of {LOSSES}")
    rng = np.random.default_rng(seed)
    rows = []
    for query in tasks[tasks["split"] == "train"].itertuples():
        relevant = list(query.relevant)
        relevant_set = set(relevant)
        if loss != "contrastive":
            pairs = [{"anchor": query.query, "positive": item} for item in relevant]
            if mined is not None:  # a query the miner found nothing for gets a sampled negative
                others = [c for c in query.candidates if c not in relevant_set]
                hard = mined.get(query.query_id) or [others[rng.integers(len(others))]]
                pairs = [pair | {"negative": hard[i % len(hard)]} for i, pair in enumerate(pairs)]
            rows += pairs
            continue
        rows += [{"sentence1": query.query, "sentence2": item, "label": 1.0} for item in relevant]
        if mined is not None:
            negatives = mined.get(query.query_id, [])[:negatives_per_query]
        else:
            others = [c for c in query.candidates if c not in relevant_set]
            picked = rng.choice(len(others), min(negatives_per_query, len(others)), replace=False)
            negatives = [others[j] for j in picked]
        rows += [{"sentence1": query.query, "sentence2": item, "label": 0.0} for item in negatives]
    return pd.DataFrame(rows)


def hard_negatives(
    tasks: pd.DataFrame, model: Any, negatives_per_query: int, relative_margin: float
) -> dict[str, list[str]]:
    """Per train query id, its hardest negatives, hardest first: sentence-transformers'
    mine_hard_negatives over each task's candidates, a negative scoring at most (1 - relative_margin)
    x the positive's score. Never an item relevant for the query, never one outside its candidates:
    both are dropped here whatever the miner returns."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    mined: dict[str, list[str]] = {}
    train = tasks[tasks["split"] == "train"]
    for _, group in train.groupby("task", sort=False):
        pairs = [(q.query, item) for q in group.itertuples() for item in q.relevant]
        pool = sorted({c for cs in group["candidates"] for c in cs})
        triplets = mine_hard_negatives(
            Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]}),
            model,
            corpus=pool,
            num_negatives=negatives_per_query,
            relative_margin=relative_margin,
            sampling_strategy="top",
            output_format="triplet",
            output_scores=True,
            verbose=False,
        )
        # a query with several positives has negatives mined against each: the hardest of them all
        by_query: dict[str, dict[str, float]] = {}
        for anchor, negative, scores in zip(
            triplets["anchor"], triplets["negative"], triplets["scores"], strict=True
        ):
            by_query.setdefault(anchor, {})[negative] = scores[1]
        for q in group.itertuples():
            allowed = set(q.candidates) - set(q.relevant)
            scored = by_query.get(q.query, {})
            found = sorted((n for n in scored if n in allowed), key=lambda n: (-scored[n], n))
            mined[q.query_id] = found[:negatives_per_query]
    return mined


class BalancedBatchSampler(DefaultBatchSampler):
    """Batches with round(pos_ratio * batch_size) positive pairs (label 1) and negatives for the rest,
    each pool shuffled every epoch; the epoch ends when a pool runs out."""

    def __init__(
        self, dataset, batch_size: int, drop_last: bool, pos_ratio: float = 0.5, **kwargs: Any
    ) -> None:  # noqa: ANN001
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last, **kwargs)
        if not 0 <= pos_ratio <= 1:
            raise ValueError(f"pos_ratio {pos_ratio}: expected a fraction in [0, 1]")
        labels = np.asarray(dataset["label"], dtype=float)
        self.positives, self.negatives = np.flatnonzero(labels > 0.5), np.flatnonzero(labels <= 0.5)
        self.n_pos = round(pos_ratio * batch_size)
        self.n_neg = batch_size - self.n_pos
        if (self.n_pos and not len(self.positives)) or (self.n_neg and not len(self.negatives)):
            raise ValueError(f"pos_ratio {pos_ratio} needs both positive and negative pairs")

    def __len__(self) -> int:
        per_pool = [len(p) // n for p, n in ((self.positives, self.n_pos), (self.negatives, self.n_neg)) if n]
        return min(per_pool)

    def __iter__(self):  # noqa: ANN204
        rng = np.random.default_rng(self.seed + getattr(self, "epoch", 0))
        positives, negatives = rng.permutation(self.positives), rng.permutation(self.negatives)
        for b in range(len(self)):
            batch = [
                *positives[b * self.n_pos : (b + 1) * self.n_pos],
                *negatives[b * self.n_neg : (b + 1) * self.n_neg],
            ]
            yield [int(i) for i in rng.permutation(batch)]


# --- training ----------------------------------------------------------------------------------


# Long because it is the sentence-transformers examples' recipe in one place, numbered steps read top
# to bottom: splitting it would scatter one training run over helpers used once.
def train_embedder(
    base_model: str | Path,
    tasks: pd.DataFrame,
    out_dir: str | Path,
    params: dict[str, Any],
    report_to: list[str] | None = None,
) -> dict[str, Any]:
    """Fine-tune `base_model` on the train split with the loss in params (params.yaml train_embedder:
    `training` holds SentenceTransformerTrainingArguments fields, its `seed` included; `lora` peft
    LoraConfig fields); save it (sentence-transformers format; only the adapter with `lora`) to
    `out_dir`. With `training.eval_strategy` set, `validation_evaluator` scores the checkpoints and
    `load_best_model_at_end` keeps the best. `tasks` must not hold the test split. Returns the loss
    per step, the validation score per evaluation and the best one."""
    if (tasks["split"] == "test").any():  # the test split is read once, by eval_embedder
        raise ValueError(
            "train_embedder: the tasks hold test-split queries; give it the train and validation splits"
        )
    negatives, by_task = params.get("negatives", "random"), params.get("per_task_batches", False)
    if negatives not in NEGATIVES:
        raise ValueError(f"train_embedder.negatives {negatives!r}: expected one of {NEGATIVES}")
    if by_task and params["loss"] == "contrastive":
        raise ValueError(
            "train_embedder.per_task_batches: for the in-batch losses (mnrl, cached_mnrl, gist); "
            "contrastive batches are made by pos_ratio"
        )
    training = params["training"]  # SentenceTransformerTrainingArguments fields
    torch.manual_seed(training["seed"])

    # 1. The model: a sentence-transformers checkpoint, or a causal LM (e.g.
    # models/pretrained/student_instruct) with last-token pooling and a LoRA adapter
    model = SentenceTransformer(
        str(require_model(base_model)), device="cuda" if torch.cuda.is_available() else "cpu"
    )
    if params.get("lora"):  # decoder embedders: train a LoRA adapter, the base stays frozen
        from peft import LoraConfig

        model.add_adapter(LoraConfig(**params["lora"], task_type="FEATURE_EXTRACTION"))

    # 2. The training pairs. per_task_batches: one dataset per task, so that a batch never mixes
    # tasks and its in-batch negatives are items of the query's own task
    # (training.multi_dataset_batch_sampler: how the tasks' batches alternate); otherwise a batch's
    # other items are mostly other tasks', easy to tell apart from the positive
    mined = None
    if negatives == "hard":  # mined with the model as it starts, before any training step
        mined = hard_negatives(tasks, model, params["negatives_per_query"], params["relative_margin"])
    groups = tasks.groupby("task", sort=True) if by_task else [("all", tasks)]
    pairs = {
        task: training_pairs(group, params["loss"], params["negatives_per_query"], training["seed"], mined)
        for task, group in groups
    }
    train_dataset = DatasetDict(
        {task: Dataset.from_pandas(p, preserve_index=False) for task, p in pairs.items()}
    )

    # 3. The loss, and the batches it needs: an in-batch negative must not be another positive
    loss = LOSSES[params["loss"]](model, params, str(base_model))
    sampler = BatchSamplers.NO_DUPLICATES
    if params["loss"] == "contrastive":
        sampler = partial(BalancedBatchSampler, pos_ratio=params["pos_ratio"])

    # 4. The evaluator that chooses among checkpoints: the validation split only
    evaluator = validation_evaluator(tasks) if training.get("eval_strategy", "no") != "no" else None

    # 5. Train; checkpoints exist only to choose among them, the chosen one is saved to out_dir
    with tempfile.TemporaryDirectory(prefix="embedder-checkpoints-") as checkpoints:
        args = SentenceTransformerTrainingArguments(
            **({"save_strategy": "no"} | training),
            output_dir=checkpoints,
            batch_sampler=sampler,
            logging_steps=1,
            report_to=report_to or [],
            use_cpu=not torch.cuda.is_available(),
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset if by_task else train_dataset["all"],
            loss=loss,
            evaluator=evaluator,
        )
        result = trainer.train()

    # 6. Save. The model card would state the wall-clock training time, so the same training would
    # give a different DVC hash each run; the runtime goes to metrics/train_embedder.json instead.
    model.model_card_data._training_start_time = None
    with replacing(out_dir) as staging:
        model.save_pretrained(str(staging))
    return training_summary(trainer, result, pairs, model)


def training_summary(trainer: Any, result: Any, pairs: dict[str, pd.DataFrame], model: Any) -> dict[str, Any]:
    """What a run did: its pairs, parameters trained, steps, the checkpoint chosen and its validation
    score, the loss per step and the validation score per evaluation."""
    history = trainer.state.log_history
    best = trainer.state.best_model_checkpoint  # .../checkpoint-<step>; None without selection
    return {
        "pairs": sum(map(len, pairs.values())),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "steps": trainer.state.global_step,
        "best_step": int(best.rsplit("-", 1)[1]) if best else trainer.state.global_step,
        "validation_ndcg@10": round(trainer.state.best_metric, 4) if best else None,
        "train_loss": round(result.training_loss, 4),
        "runtime_s": round(result.metrics["train_runtime"], 1),
        "losses": [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h],
        "validation": [
            {"step": h["step"], "ndcg@10": round(h["eval_sequential_score"], 4)}
            for h in history
            if "eval_sequential_score" in h
        ],
    }
