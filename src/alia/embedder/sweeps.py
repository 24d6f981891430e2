"""The embedder's three sweeps (`make sweeps`, docs/embedder.md): DVC experiments, queued by
`queue_commands`, each scored on the validation split over the train_embedder seeds, collected into
DVC plots and a Markdown table.

A sweep is the experiments whose every other embedder setting (params.yaml embed_tasks and
train_embedder) is the reference's: the defaults with the contrastive loss, the loss that pos_ratio and
the sampled negatives belong to and that the paper's claims (a) and (c) are made with, in batches
that mix the tasks, trained one epoch (the sweeps' 19 experiments x 3 seeds fit in 2 hours on 2
cores; the default's 5 epochs are for gist, which sees the positive pairs only). The reference is a
point of each sweep.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

from alia.core.io import write_json, write_text
from alia.core.tracking import flatten_params
from alia.embedder.evaluation import RETRIEVAL_METRICS

# sweep name -> the params.yaml keys it varies (the loss sweep: the loss and how negatives are found)
SWEEPS = {
    "augment_p": ("embed_tasks.augment_p",),
    "loss": ("train_embedder.loss", "train_embedder.negatives"),
    "pos_ratio": ("train_embedder.pos_ratio",),
}
METRICS_FILE = "metrics/embedder.json"
REFERENCE = {
    "train_embedder": {
        "loss": "contrastive",
        "negatives": "random",
        "per_task_batches": False,  # contrastive batches are made by pos_ratio
        "training": {"num_train_epochs": 1},
    }
}

# What `make sweeps` queues: per sweep, the values of its settings (one experiment per value, DVC's
# comma list), each on top of the reference. The reference is a point of every sweep, so it is queued
# once, in the loss sweep (pos_ratio 0.5 and augment_p 0.5 are not queued again).
QUEUE = {
    "loss": [
        {"train_embedder.loss": "contrastive,mnrl,cached_mnrl,gist"},
        {"train_embedder.negatives": "hard"},
    ],
    "pos_ratio": [{"train_embedder.pos_ratio": "0,0.125,0.25,0.375,0.625,0.75,0.875,1"}],
    "augment_p": [{"embed_tasks.augment_p": "0,0.2,0.4,0.6,0.8,1"}],
}


def queue_commands() -> list[list[str]]:
    """The `dvc exp run --queue` commands of the three sweeps: up to eval_embedder, scored on the
    validation split, every setting of REFERENCE in place except the swept one."""
    fixed = dotted(REFERENCE)
    commands = []
    for sweep in QUEUE.values():
        for varied in sweep:
            flags = {"eval_embedder.split": "validation"} | fixed | varied
            commands.append(
                ["dvc", "exp", "run", "--queue", "eval_embedder"]
                + [arg for key, value in flags.items() for arg in ("-S", f"{key}={yaml_value(value)}")]
            )
    return commands


def dotted(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as `section.key` -> value."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        flat |= dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return flat


def yaml_value(value: Any) -> str:
    """A value as `-S` takes it: YAML (false, not Python's False); a string as it is (a comma list)."""
    return value if isinstance(value, str) else yaml.safe_dump(value).removesuffix("\n...\n").strip()


def lookup(params: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        params = params[part]
    return params


def swept_value(sweep: str, params: dict[str, Any]) -> Any:
    """What the plots put on their axis: the swept setting ("mnrl", "contrastive, hard negatives")."""
    if sweep != "loss":
        return lookup(params, SWEEPS[sweep][0])
    loss, negatives = (lookup(params, key) for key in SWEEPS["loss"])
    return loss if negatives == "random" else f"{loss}, {negatives} negatives"


def experiment_files(revs: Iterable[str], root: str | Path = ".") -> list[tuple[dict, dict]]:
    """(params, embedder metrics) of each experiment commit that scored the validation split."""
    runs = []
    for rev in revs:
        show = [
            subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
            for path in ("params.yaml", METRICS_FILE)
        ]
        if any(s.returncode for s in show):
            continue
        params, metrics = (yaml.safe_load(s.stdout) for s in show)
        if metrics.get("split") == "validation" and "seeds" in metrics:
            runs.append((params, metrics))
    return runs


SECTIONS = ("embed_tasks", "train_embedder")  # what the sweeps vary, and must hold fixed otherwise


# settings added after experiments ran: what those experiments, which lack the key, trained with
ADDED = {"train_embedder.per_task_batches": "False"}


def settings(params: dict[str, Any]) -> dict[str, str]:
    """The embedder's settings (params.yaml embed_tasks and train_embedder) under dotted keys, as text."""
    return ADDED | flatten_params({k: params[k] for k in SECTIONS})


def reference(params: dict[str, Any]) -> dict[str, Any]:
    """The sweeps' reference settings: params.yaml with REFERENCE's settings in place, at any depth."""

    def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        return base | {k: merged(base[k], v) if isinstance(v, dict) else v for k, v in over.items()}

    return {k: merged(params[k], REFERENCE.get(k, {})) for k in SECTIONS}


def sweep_runs(runs: list[tuple[dict, dict]], ref: dict[str, Any]) -> dict[str, list[tuple[Any, dict]]]:
    """Per sweep, (swept value, metrics) of the runs whose every other embedder setting is the
    reference's; one run per value (the first)."""
    fixed = settings(ref)
    swept = {}
    for sweep, keys in SWEEPS.items():
        points: dict[Any, dict] = {}
        for params, metrics in runs:
            ours = settings(params)
            if all(ours.get(k) == v for k, v in fixed.items() if k not in keys):
                points.setdefault(swept_value(sweep, params), metrics)
        swept[sweep] = sorted(points.items(), key=lambda p: (isinstance(p[0], str), p[0]))
    return swept


def plot_rows(sweep: str, points: list[tuple[Any, dict]]) -> list[dict]:
    """MAP@100 of the fine-tuned model (mean over seeds), one row per task (macro included) and swept
    value: a line per task against the value, or for the loss a bar per loss within each task's group
    (the templates in .dvc/plots/ colour by `task` and `loss`)."""
    return [
        {"task": task, sweep: value, "map@100": metrics["finetuned"][task]["map@100"]}
        for task in points[0][1]["finetuned"]
        for value, metrics in points
    ]


def difference(a: dict, b: dict, task: str, metric: str) -> tuple[float, float]:
    """a - b for one task's metric, both means over seeds, with the half-width of Welch's 95% interval
    (each run's standard deviation recovered from its t-interval)."""
    stats_of = []
    for m in (a, b):
        row, n = m["finetuned"][task], m["seeds"]
        sd = row[f"{metric}_ci95"] * np.sqrt(n) / stats.t.ppf(0.975, n - 1)
        stats_of.append((row[metric], sd**2 / n, n))
    (mean_a, var_a, n_a), (mean_b, var_b, n_b) = stats_of
    se2 = var_a + var_b
    if se2 == 0:
        return round(mean_a - mean_b, 4), 0.0
    dof = se2**2 / (var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1))
    return round(mean_a - mean_b, 4), round(float(stats.t.ppf(0.975, dof) * np.sqrt(se2)), 4)


def summary_table(swept: dict[str, list[tuple[Any, dict]]], ref: dict[str, Any]) -> str:
    """Markdown: per sweep and value, the macro metrics, the macro MAP@100's difference to the reference
    settings and MAP@100 per task, each a mean ± 95% interval over seeds."""
    lines = ["# Embedder sweeps: validation split, fine-tuned model, mean ± 95% interval over seeds", ""]
    for sweep, points in swept.items():
        ref_point = dict(points).get(swept_value(sweep, ref))
        if not points or ref_point is None:
            continue
        tasks = [t for t in points[0][1]["finetuned"] if t != "macro"]
        lines += [f"## {sweep}", ""]
        head = [sweep, "seeds", *(f"macro {m}" for m in RETRIEVAL_METRICS), "macro map@100 - reference"]
        lines += ["| " + " | ".join(head + [f"{t} map@100" for t in tasks]) + " |"]
        lines += ["|---" * (len(head) + len(tasks)) + "|"]
        for value, metrics in points:
            finetuned = metrics["finetuned"]
            cells = [str(value), str(metrics["seeds"])]
            cells += [
                f"{finetuned['macro'][m]:.3f} ± {finetuned['macro'][f'{m}_ci95']:.3f}"
                for m in RETRIEVAL_METRICS
            ]
            gain = "{:+.3f} ± {:.3f}".format(*difference(metrics, ref_point, "macro", "map@100"))
            cells += ["(reference)" if metrics is ref_point else gain]
            cells += [f"{finetuned[t]['map@100']:.3f} ± {finetuned[t]['map@100_ci95']:.3f}" for t in tasks]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def collect(out_dir: str | Path, root: str | Path = ".") -> dict[str, int]:
    """Write each sweep's plot rows (out_dir/<sweep>.json) and the summary (out_dir/sweeps.md) from the
    repository's experiments; returns the number of points per sweep."""
    import dvc.api

    rows = dvc.api.exp_show(repo=str(root), num=-1)
    revs = [
        r["rev"]
        for r in rows
        if r.get("typ") in ("branch_commit", "branch_base") and r.get("State") == "Success"
    ]
    ref = reference(yaml.safe_load((Path(root) / "params.yaml").read_text()))
    swept = sweep_runs(experiment_files(revs, root), ref)
    write_sweeps(swept, ref, out_dir)
    return {sweep: len(points) for sweep, points in swept.items()}


def write_sweeps(swept: dict[str, list[tuple[Any, dict]]], ref: dict[str, Any], out_dir: str | Path) -> None:
    """Each sweep that has points as its plot rows, and the summary if any has: a sweep with no
    experiments to collect leaves the committed files as they are."""
    out_dir = Path(out_dir)
    for sweep, points in swept.items():
        if points:
            write_json(out_dir / f"{sweep}.json", plot_rows(sweep, points))
    if any(swept.values()):
        write_text(out_dir / "sweeps.md", summary_table(swept, ref))
