"""The embedder's three sweeps (`make sweeps`, docs/embedder.md): DVC experiments, each scored on the
validation split over the train_embedder seeds, collected into DVC plots and a Markdown table.

A sweep is the experiments whose other swept settings are the defaults (params.yaml), so the
default configuration is a point of each sweep.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from alia.embedder import METRICS
from alia.tracking import write_json

# sweep name -> the params.yaml keys it varies (the loss sweep: the loss and how negatives are found)
SWEEPS = {
    "augment_p": ("embed_tasks.augment_p",),
    "loss": ("train_embedder.loss", "train_embedder.negatives"),
    "pos_ratio": ("train_embedder.pos_ratio",),
}
METRICS_FILE = "metrics/embedder.json"


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


def sweep_runs(runs: list[tuple[dict, dict]], defaults: dict[str, Any]) -> dict[str, list[tuple[Any, dict]]]:
    """Per sweep, (swept value, metrics) of the runs that hold every other swept setting at its default;
    one run per value (the first)."""
    swept = {}
    for sweep in SWEEPS:
        others = [k for other, ks in SWEEPS.items() if other != sweep for k in ks]
        points: dict[Any, dict] = {}
        for params, metrics in runs:
            if all(lookup(params, k) == lookup(defaults, k) for k in others):
                points.setdefault(swept_value(sweep, params), metrics)
        swept[sweep] = sorted(points.items(), key=lambda p: (isinstance(p[0], str), p[0]))
    return swept


def plot_rows(sweep: str, points: list[tuple[Any, dict]]) -> list[dict]:
    """MAP@100 of the fine-tuned model (mean over seeds) per task and macro: one row per swept value for
    a line plot, or one row per (task, loss) for the loss comparison's bars."""
    if sweep == "loss":
        return [
            {"task": f"{task} · {value}", "map@100": metrics["finetuned"][task]["map@100"]}
            for task in points[0][1]["finetuned"]
            for value, metrics in points
        ]
    return [{sweep: value} | {t: r["map@100"] for t, r in m["finetuned"].items()} for value, m in points]


def summary_table(swept: dict[str, list[tuple[Any, dict]]]) -> str:
    """Markdown: per sweep and value, the macro metrics (mean ± 95% interval over seeds), the
    difference to the pretrained model, and MAP@100 per task."""
    lines = ["# Embedder sweeps: validation split, fine-tuned model, mean ± 95% interval over seeds", ""]
    for sweep, points in swept.items():
        if not points:
            continue
        tasks = [t for t in points[0][1]["finetuned"] if t != "macro"]
        lines += [f"## {sweep}", ""]
        head = [sweep, "seeds", *(f"macro {m}" for m in METRICS), "macro map@100 - pretrained"]
        lines += ["| " + " | ".join(head + [f"{t} map@100" for t in tasks]) + " |"]
        lines += ["|---" * (len(head) + len(tasks)) + "|"]
        for value, metrics in points:
            macro, gain = metrics["finetuned"]["macro"], metrics["finetuned_minus_pretrained"]["macro"]
            cells = [str(value), str(metrics["seeds"])]
            cells += [f"{macro[m]:.3f} ± {macro[f'{m}_ci95']:.3f}" for m in METRICS]
            cells += [f"{gain['map@100']:+.3f} ± {gain['map@100_ci95']:.3f}"]
            cells += [f"{metrics['finetuned'][t]['map@100']:.3f}" for t in tasks]
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
    defaults = yaml.safe_load((Path(root) / "params.yaml").read_text())
    swept = sweep_runs(experiment_files(revs, root), defaults)
    out_dir = Path(out_dir)
    for sweep, points in swept.items():
        write_json(out_dir / f"{sweep}.json", plot_rows(sweep, points) if points else [])
    (out_dir / "sweeps.md").write_text(summary_table(swept))
    return {sweep: len(points) for sweep, points in swept.items()}
