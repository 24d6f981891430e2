"""Running the transfer rung (alia.student.transfer): `alia exp transfer configs/transfer/cpu.yaml`.

An experiment beside the positive controls, not a stage of the default run. It reads what the
default pipeline built (data/tables, D_eval, the pretrained student), and writes:
- data/transfer/: each fold's corpora, every model's predictions on its held-out questions, the
  teacher arm's passages and response caches;
- models/transfer/<fold>_<arm>_<format>/: the adapters;
- metrics/transfer/transfer.json and transfer.md: the pooled table.
Each (fold, arm, format) is one unit; a finished unit's predictions are kept with the fingerprint of
what made them, so that an interrupted rung resumes where it stopped and a changed setting redoes
only what it touches.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import ValidationError

from alia.core.io import read_json, read_parquet, write_json, write_parquet, write_text
from alia.core.params import load_params, settings_error
from alia.core.precision import resolve_bf16, resolve_dtype
from alia.core.tracking import start_run
from alia.data.tables import read_tables
from alia.kd.corpora import PassageFilter, filter_passages, qa_records, qa_requests
from alia.kd.faithfulness import load_checker, passing
from alia.kd.faithfulness import summary as faithfulness_summary
from alia.llm.ask import ask_rows
from alia.llm.prompts import load_prompt
from alia.llm.teacher import stage_teacher
from alia.student.scoring import evaluate_model
from alia.student.training import fingerprint, train_adapter, training_examples
from alia.student.transfer import (
    LABEL,
    TransferConfig,
    accuracies,
    asset_folds,
    direction_table,
    facts_lookup,
    pooled_results,
    rung_table,
    shuffle_failure_modes,
    teacher_requests,
    template_corpus,
)

WORK = Path("data/transfer")
MODELS = Path("models/transfer")
CHECKPOINTS = Path("checkpoints/transfer")
RULES = Path("data/vocabulary_rules.yaml")


def load_config(path: str | Path) -> TransferConfig:
    try:
        return TransferConfig(**(yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}))
    except ValidationError as error:
        raise settings_error(error, str(path)) from None


class Rung:
    """One rung: the config, the recipe and scorer from params.yaml, and the default run's inputs."""

    def __init__(self, config: TransferConfig, tables_dir: Path, eval_dir: Path, pretrained_dir: Path):
        for path, stage in (
            (tables_dir, "tables"),
            (eval_dir / "d_eval.parquet", "build_eval"),
            (pretrained_dir, f"prepare_models@{config.student}"),
        ):
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: run `dvc repro {stage}` (or `dvc pull`) first")
        self.config, self.pretrained_dir, self.tables_dir = config, pretrained_dir, tables_dir
        self.matrix = read_tables(tables_dir)["fm_sensor_matrix"]
        self.questions = read_parquet(eval_dir / "d_eval.parquet")
        self.folds = asset_folds(sorted(self.matrix["asset"].unique()), config.folds, config.seed)
        recipe = load_params("train_student")
        self.sft = recipe["sft"] | config.sft
        self.sft["bf16"] = resolve_bf16(self.sft.get("bf16", False))
        self.recipe = {
            "lora": recipe["lora"],
            "sft": self.sft,
            "replay_fraction": recipe["replay_fraction"],
            "dtype": resolve_dtype(recipe["dtype"]),
        }
        mcqa = load_params("mcqa")
        sample = {"sample": config.questions_per_fold, "modes": config.modes, "perturbation": False}
        self.mcqa = mcqa | {"dtype": resolve_dtype(mcqa["dtype"]), "sets": {"held_out": sample}}
        self.costs: dict[str, dict[str, float]] = {}

    def held_out(self, k: int, in_sample: bool = False) -> pd.DataFrame:
        """Fold k's held-out questions; with `in_sample`, those about its training assets instead."""
        about = self.questions["asset_name"].isin(self.folds[k])
        return self.questions[~about if in_sample else about].reset_index(drop=True)

    def training_matrix(self, k: int) -> pd.DataFrame:
        train = self.matrix[~self.matrix["asset"].isin(self.folds[k])]
        return train.reset_index(drop=True)

    @staticmethod
    def _kept(name: str, key: str) -> pd.DataFrame | None:
        """The predictions `name` as kept, if they were made by what `key` fingerprints."""
        path = WORK / "predictions" / f"{name}.parquet"
        kept = read_parquet(path) if path.exists() else None
        return kept if kept is not None and len(kept) and (kept["fingerprint"] == key).all() else None

    def _scored(self, name: str, model_dir: Path, k: int, key: str, in_sample: bool = False) -> pd.DataFrame:
        """The model's predictions on fold k's held-out (or `in_sample`) questions: kept, or scored now."""
        kept = self._kept(name, key)
        if kept is not None:
            return kept
        path = WORK / "predictions" / f"{name}.parquet"
        started = time.monotonic()
        questions = {"held_out": self.held_out(k, in_sample)}
        _, _, predictions = evaluate_model(model_dir, questions, self.mcqa, desc=name)
        self.costs.setdefault(name, {})["score_s"] = round(time.monotonic() - started, 1)
        predictions = predictions.assign(fold=k, fingerprint=key)
        write_parquet(predictions, path)
        return predictions

    def untuned(self) -> pd.DataFrame:
        key = fingerprint(str(self.pretrained_dir), self.mcqa, self.folds)
        return pd.concat(
            [self._scored(f"fold{k}_untuned", self.pretrained_dir, k, key) for k in range(len(self.folds))],
            ignore_index=True,
        )

    def unit(self, k: int, arm: str, fmt: str, corpus: pd.DataFrame) -> pd.DataFrame:
        """Train on one corpus (unless its adapter and predictions are current) and score fold k."""
        name = f"fold{k}_{arm}_{fmt}"
        examples, counts = training_examples(
            corpus, fmt, self.recipe["replay_fraction"], None, self.sft["seed"]
        )
        key = fingerprint(str(self.pretrained_dir), examples, self.recipe, self.mcqa, self.folds[k])
        kept = self._kept(name, key) if (WORK / "training" / f"{name}.json").exists() else None
        if kept is not None:
            return kept
        self._train(name, k, arm, fmt, examples, counts)
        return self._scored(name, MODELS / name, k, key)

    def in_sample(self, k: int, arm: str, fmt: str, held_out: pd.DataFrame) -> pd.DataFrame:
        """A trained unit (its `held_out` predictions) on the questions about its own training assets:
        whether it learned what it read at all (a leak by design, `_in_sample`; never a transfer result)."""
        name = f"fold{k}_{arm}_{fmt}"
        key = held_out["fingerprint"].iloc[0]
        return self._scored(f"{name}_in_sample", MODELS / name, k, key, in_sample=True)

    def _train(self, name: str, k: int, arm: str, fmt: str, examples: list[dict], counts: dict) -> None:
        with start_run(
            "transfer", {"fold": self.folds[k], "arm": arm, "format": fmt, **self.recipe}, variant=name
        ):
            import mlflow

            result = train_adapter(
                self.pretrained_dir,
                examples,
                fmt,
                MODELS / name,
                CHECKPOINTS / name,
                self.recipe["lora"],
                self.sft,
                dtype=self.recipe["dtype"],
                report_to=["mlflow"],
            )
            figures = {field: v for field, v in result.items() if field != "losses"} | counts
            write_json(WORK / "training" / f"{name}.json", figures)  # kept beside the predictions
            mlflow.log_metrics(
                {field: float(v) for field, v in figures.items() if isinstance(v, int | float)}
            )
            self.costs[name] = {"train_s": result["runtime_s"]}

    # --- the teacher arm: the pipeline's own prompts, the true facts as Phase I's ------------------

    def teacher_passages(self) -> pd.DataFrame:
        """KD_Base passages about every asset, from its true facts (the requests are per asset, so each
        fold's corpus is the rows of its training assets, and each prompt is asked once)."""
        requests = teacher_requests(self.matrix, self.config.facts_per_document)
        overrides = (load_params("kd_base").get("teacher") or {}) | self.config.teacher
        with stage_teacher(overrides, WORK / "teacher_cache" / "kd_base.sqlite") as teacher:
            answers, _ = ask_rows(teacher, load_prompt("kd_base"), requests, "transfer kd_base")
            self.costs["teacher_kd_base"] = teacher.run_stats()
        keep = PassageFilter(load_params("kd_base")["near_duplicate_threshold"])
        passages = keep(answers)
        write_json(WORK / "teacher" / "kd_base_filtered.json", keep.counts)  # what the filters removed
        # each passage read against its true facts; the tables' empty cells are its denials
        return load_checker(self.tables_dir, RULES)(passages, passages["text"].tolist())

    def teacher_qa(self, passages: pd.DataFrame) -> pd.DataFrame:
        """KD_QA records from the given passages (alia.kd.corpora, the kd_qa prompt)."""
        documents = self.config.qa_documents or len(passages)
        requests = qa_requests(passages, documents, self.config.min_pairs)
        overrides = (load_params("kd_qa").get("teacher") or {}) | self.config.teacher
        with stage_teacher(overrides, WORK / "teacher_cache" / "kd_qa.sqlite") as teacher:
            answers, parsed = ask_rows(teacher, load_prompt("kd_qa"), requests, "transfer kd_qa")
        answers["parsed"] = parsed
        kept, _ = filter_passages(answers)
        qa, _, _ = qa_records(kept.drop(columns="parsed"), kept["parsed"].tolist())
        return qa


def corpus_for(rung: Rung, k: int, arm: str, fmt: str, passages: pd.DataFrame | None) -> pd.DataFrame:
    """Fold k's corpus of one arm and format, written from the training assets' facts only."""
    matrix = rung.training_matrix(k)
    directions = tuple(rung.config.qa_directions)
    if arm == "template":
        return template_corpus(matrix, fmt, directions)
    if arm == "shuffled":
        return template_corpus(shuffle_failure_modes(matrix, rung.config.seed + k), fmt, directions)
    own = passages[passages["equipment_class"].isin(set(matrix["asset"]))].reset_index(drop=True)
    if arm in ("teacher_checked", "teacher_random"):
        checked = own[passing(own, rung.config.filters)].reset_index(drop=True)
        if arm == "teacher_random":  # as many passages as the filter kept, drawn at random
            checked = own.sample(n=len(checked), random_state=rung.config.seed + k).reset_index(drop=True)
        own = checked
    return own if fmt == "text" else rung.teacher_qa(own)


def run(config_file: str | Path, out_dir: str | Path = "metrics/transfer") -> dict[str, Any]:
    """Every unit of the rung (resuming), then the pooled results: metrics/transfer/transfer.{json,md}."""
    config = load_config(config_file)
    rung = Rung(
        config, Path("data/tables"), Path("data/eval/questions"), Path("models/pretrained", config.student)
    )
    untuned = rung.untuned()
    pooled = {name: pd.concat(parts, ignore_index=True) for name, parts in _run_units(rung).items()}
    resamples, seed = rung.mcqa["bootstrap_resamples"], rung.mcqa["seed"]
    results = pooled_results(pooled, untuned, resamples, seed)
    # the facts' own effect: each true-fact arm paired with the shuffled arm of its format, whose
    # corpus differs from the template's in the facts alone
    for name in results:
        arm, _, rest = name.partition("_")
        if arm != "shuffled" and f"shuffled_{rest}" in pooled:
            paired = pooled_results({name: pooled[name]}, pooled[f"shuffled_{rest}"], resamples, seed)[name]
            results[name]["vs_shuffled"] = paired["vs_untuned"]
            results[name]["vs_shuffled_by_direction"] = paired["vs_untuned_by_direction"]
    # the filter's own effect: the checked passages paired with all of them, and with as many at random
    for name in results:
        for arm, against in (("teacher_checked", "teacher"), ("teacher_random", "teacher"),
                             ("teacher_checked", "teacher_random")):  # fmt: skip
            other = against + name.removeprefix(arm)
            if name.startswith(f"{arm}_") and other in pooled:
                paired = pooled_results({name: pooled[name]}, pooled[other], resamples, seed)[name]
                results[name][f"vs_{against}"] = paired["vs_untuned"]
                results[name][f"vs_{against}_by_direction"] = paired["vs_untuned_by_direction"]
    units = {f"fold{k}_{name}" for name in pooled for k in range(len(rung.folds))}
    summary = {
        "label": LABEL,
        "folds": rung.folds,
        "config": config.model_dump(),
        "untuned": accuracies(untuned, resamples, seed),
        "facts_lookup": _lookups(rung, untuned),
        "results": results,
        "teacher_kd_base_filtered": read_json(WORK / "teacher" / "kd_base_filtered.json")
        if "teacher" in config.arms
        else {},
        "teacher_corpora": {  # each fold's teacher corpora, read against their facts
            path.stem: faithfulness_summary(read_parquet(path))
            for path in sorted((WORK / "corpora").glob("fold*_teacher*_text.parquet"))
        },
        "training": {
            path.stem: read_json(path)
            for path in sorted((WORK / "training").glob("*.json"))
            if path.stem in units
        },
    }
    _write(Path(out_dir), summary, rung)
    return summary


def _run_units(rung: Rung) -> dict[str, list[pd.DataFrame]]:
    """Every (fold, arm, format) unit, trained and scored unless current: predictions per arm and
    format (and `_in_sample`), a frame per fold."""
    passages: pd.DataFrame | None = None
    predictions: dict[str, list[pd.DataFrame]] = {}
    # chat first: the format in which the positive controls learn, so that it is the first result in
    for fmt in ("chat", "text"):
        for arm, formats in rung.config.arms.items():
            if fmt not in formats:
                continue
            if arm.startswith("teacher") and passages is None:
                passages = rung.teacher_passages()
            for k in range(len(rung.folds)):
                corpus = corpus_for(rung, k, arm, fmt, passages)
                path = WORK / "corpora" / f"fold{k}_{arm}_{fmt}.parquet"
                write_parquet(corpus, path)
                held_out = rung.unit(k, arm, fmt, corpus)
                predictions.setdefault(f"{arm}_{fmt}", []).append(held_out)
                if rung.config.in_sample:
                    in_sample = rung.in_sample(k, arm, fmt, held_out)
                    predictions.setdefault(f"{arm}_{fmt}_in_sample", []).append(in_sample)
    return predictions


def _write(out_dir: Path, summary: dict[str, Any], rung: Rung) -> None:
    write_json(out_dir / "transfer.json", summary)
    write_json(WORK / "costs.json", rung.costs)  # this run's seconds: the log's, not the results'
    results = summary["results"]
    write_text(
        out_dir / "transfer.md",
        f"# Transfer rung ({LABEL})\n\nFolds (held-out assets): {rung.folds}\n\n"
        + rung_table(results)
        + "\nBy direction and form (fm2sensor sel and el are FailureSensorIQ's own Acc_Sel and Acc_El, as its"
        " run_eval.py defines them):\n\n"
        + direction_table(results)
        + "\nThe facts' own effect: each true-fact arm against the shuffled arm of its format:\n\n"
        + direction_table(results, against="shuffled")
        + "\nThe filter's own effect: the teacher's passages that pass `filters` (and as many drawn at"
        " random) against all of them:\n\n"
        + rung_table(results, against="teacher")
        + "\nThe passages that pass `filters` against as many drawn at random (the filter, not the size):\n\n"
        + rung_table(results, against="teacher_random"),
    )


def _lookups(rung: Rung, untuned: pd.DataFrame) -> dict[str, Any]:
    """The lookup baseline on the very questions the models answered, with the true and the shuffled
    training facts."""
    out: dict[str, Any] = {}
    for name, shuffled in (("true_facts", False), ("shuffled_facts", True)):
        parts = []
        for k in range(len(rung.folds)):
            matrix = rung.training_matrix(k)
            matrix = shuffle_failure_modes(matrix, rung.config.seed + k) if shuffled else matrix
            columns = ["id", "form", "relevancy", "asset_name", "failure_mode"]  # what accuracies() reads
            questions = untuned[untuned["fold"] == k][columns]
            parts.append(questions.assign(letter_acc=facts_lookup(untuned[untuned["fold"] == k], matrix)))
        out[name] = accuracies(pd.concat(parts), rung.mcqa["bootstrap_resamples"], rung.mcqa["seed"])
    return out
