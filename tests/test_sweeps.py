"""The embedder sweeps' collection: which experiments make a sweep, the plot rows, the differences."""

import copy
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from alia.embedder.sweeps import (
    SWEEPS,
    difference,
    experiment_files,
    plot_rows,
    queue_commands,
    reference,
    settings,
    summary_table,
    sweep_runs,
    swept_value,
    write_sweeps,
)

TASKS = ("A2S", "C2FM", "E2CAT", "E2CLT", "EU2SU", "FM2CLS", "FM2CMP", "FM2S", "S2FM")
DEFAULTS = {  # params.yaml's: the default loss and epochs are not the sweeps' reference's (contrastive, 1)
    "embed_tasks": {"augment_p": 0.5},
    "train_embedder": {
        "loss": "gist",
        "negatives": "random",
        "pos_ratio": 0.5,
        "margin": 0.5,
        "per_task_batches": True,
        "training": {"num_train_epochs": 5, "learning_rate": 5e-5},
    },
    "eval_embedder": {"split": "test"},
}


def run(augment_p=0.5, loss="contrastive", negatives="random", pos_ratio=0.5, map100=0.5, ci=0.1, epochs=1):
    params = {
        "embed_tasks": {"augment_p": augment_p},
        "train_embedder": {
            "loss": loss,
            "negatives": negatives,
            "pos_ratio": pos_ratio,
            "margin": 0.5,
            "per_task_batches": False,
            "training": {"num_train_epochs": epochs, "learning_rate": 5e-5},
        },
    }
    row = {"hit@1": map100, "map@100": map100, "ndcg@10": map100}
    row |= {f"{m}_ci95": ci for m in ("hit@1", "map@100", "ndcg@10")}
    metrics = {"split": "validation", "seeds": 3, "finetuned": {"macro": row, "A2S": row | {"queries": 2}}}
    return params, metrics


def test_a_sweep_holds_the_other_settings_at_their_defaults():
    runs = [
        run(),
        run(augment_p=0.2, map100=0.4),
        run(augment_p=0.2, loss="mnrl"),  # two swept settings off their defaults: in no sweep
        run(loss="gist", map100=0.6),
        run(negatives="hard"),
        run(pos_ratio=0.0),
        run(pos_ratio=0.125),
        run(pos_ratio=0.25, epochs=5),  # the default's epochs, not the reference's: in no sweep
    ]
    older = run(pos_ratio=0.875)  # from before per_task_batches existed: it trained with mixed batches
    del older[0]["train_embedder"]["per_task_batches"]
    runs.append(older)
    other_margin = run(map100=0.9)  # a setting no sweep varies, off its default: in no sweep
    other_margin[0]["train_embedder"]["margin"] = 1.0
    runs.insert(0, other_margin)
    ref = reference(DEFAULTS)
    assert ref["train_embedder"]["loss"] == "contrastive" and not ref["train_embedder"]["per_task_batches"]
    assert ref["embed_tasks"] == DEFAULTS["embed_tasks"]
    # the nested training settings: the reference's epochs, every other field the default's
    assert ref["train_embedder"]["training"] == {"num_train_epochs": 1, "learning_rate": 5e-5}
    swept = sweep_runs(runs, ref)
    assert [v for v, _ in swept["augment_p"]] == [0.2, 0.5]
    assert [v for v, _ in swept["loss"]] == ["contrastive", "contrastive, hard negatives", "gist"]
    assert [v for v, _ in swept["pos_ratio"]] == [0.0, 0.125, 0.5, 0.875]
    assert plot_rows("augment_p", swept["augment_p"]) == [
        {"task": "macro", "augment_p": 0.2, "map@100": 0.4},
        {"task": "macro", "augment_p": 0.5, "map@100": 0.5},
        {"task": "A2S", "augment_p": 0.2, "map@100": 0.4},
        {"task": "A2S", "augment_p": 0.5, "map@100": 0.5},
    ]
    bars = plot_rows("loss", swept["loss"])
    assert {"task": "A2S", "loss": "gist", "map@100": 0.6} in bars and len(bars) == 2 * 3
    table = summary_table(swept, ref)
    assert "| gist | 3 | 0.600 ± 0.100 | 0.600 ± 0.100 | 0.600 ± 0.100 | +0.100 ± " in table
    assert "| contrastive | 3 | 0.500 ± 0.100 | 0.500 ± 0.100 | 0.500 ± 0.100 | (reference) |" in table


def test_difference_is_welchs_interval():
    a, b = run(map100=0.6, ci=0.2)[1], run(map100=0.5, ci=0.1)[1]
    # sd from the t-interval: ci x sqrt(3) / t(0.975, 2) = 0.0805 and 0.0403; se 0.0520 on 2.94 degrees
    # of freedom (Welch), t(0.975, 2.94) = 3.219
    diff, half = difference(a, b, "macro", "map@100")
    assert diff == 0.1 and half == pytest.approx(0.1673, abs=1e-3)
    assert difference(a, a, "A2S", "hit@1")[0] == 0


def test_nothing_to_collect_leaves_the_committed_sweeps_alone(tmp_path):
    """`alia exp sweeps` without sweep experiments once emptied metrics/sweeps/*.json to []."""
    for name in [f"{sweep}.json" for sweep in SWEEPS] + ["sweeps.md"]:
        (tmp_path / name).write_text((REPO / "metrics" / "sweeps" / name).read_text())
    before = {f.name: f.read_text() for f in tmp_path.iterdir()}
    ref = reference(DEFAULTS)
    write_sweeps(dict.fromkeys(SWEEPS, []), ref, tmp_path)
    assert {f.name: f.read_text() for f in tmp_path.iterdir()} == before
    # one sweep with points: its file and the summary are rewritten, the empty sweeps' files kept
    points = sweep_runs([run(augment_p=a) for a in (0.5, 0.2)], ref)
    write_sweeps(points | {"loss": [], "pos_ratio": []}, ref, tmp_path)
    rows = json.loads((tmp_path / "augment_p.json").read_text())
    assert [(r["task"], r["augment_p"]) for r in rows] == [
        ("macro", 0.2),
        ("macro", 0.5),
        ("A2S", 0.2),
        ("A2S", 0.5),
    ]
    assert (tmp_path / "loss.json").read_text() == before["loss.json"]
    assert "## augment_p" in (tmp_path / "sweeps.md").read_text()


def test_experiment_files_reads_validation_runs_from_commits(tmp_path):
    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "metrics").mkdir()
    revs = []
    for split, augment_p in (("validation", 0.2), ("test", 0.4)):
        params, metrics = run(augment_p=augment_p)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        (tmp_path / "metrics" / "embedder.json").write_text(yaml.safe_dump(metrics | {"split": split}))
        git("add", "-A")
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", split)
        revs.append(git("rev-parse", "HEAD").strip())
    runs = experiment_files([*revs, "0" * 40], tmp_path)  # a test-split run and a missing rev: skipped
    assert [p["embed_tasks"]["augment_p"] for p, _ in runs] == [0.2]


def test_the_committed_sweep_plots_render():
    """`dvc plots show` renders the three sweeps from metrics/sweeps/ (what `alia exp sweeps` wrote)."""
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "plots", "show", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    plots = json.loads(shown.stdout)["data"]
    for plot_id, field in (
        ("MAP@100 against augment_p", "augment_p"),
        ("MAP@100 against pos_ratio", "pos_ratio"),
    ):
        rows = plots[plot_id][0]["content"]["data"]["values"]
        assert {r["task"] for r in rows} == set(TASKS) | {"macro"}
        assert len({r[field] for r in rows}) >= 2 and all(0 <= r["map@100"] <= 1 for r in rows)
    bars = plots["MAP@100 per task and loss"][0]["content"]["data"]["values"]
    assert {r["task"] for r in bars} == set(TASKS) | {"macro"}
    assert len({r["loss"] for r in bars}) == 5  # contrastive (random, hard), mnrl, cached_mnrl, gist


def test_make_sweeps_queues_the_reference_that_alia_exp_sweeps_compares_against():
    """Every experiment `make sweeps` queues (alia.embedder.sweeps.queue_commands), applied to params.yaml,
    holds the reference's settings except the ones its sweep varies: else it would fall outside every
    sweep (as a 5-epoch default once made them). Together they cover each sweep's values."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    fixed = settings(reference(params))
    assert "sweeps: install\n\talia exp queue-sweeps\n" in (REPO / "Makefile").read_text()
    seen = {sweep: set() for sweep in SWEEPS}
    for command in queue_commands():
        assert command[:5] == ["dvc", "exp", "run", "--queue", "eval_embedder"]
        flags = dict(arg.split("=", 1) for arg in command[6::2])
        assert flags.pop("eval_embedder.split") == "validation"
        varied = [k for k, v in flags.items() if "," in v] or ["train_embedder.negatives"]
        for values in itertools.product(*(flags[k].split(",") for k in varied)):
            queued = copy.deepcopy(params)
            for key, value in (flags | dict(zip(varied, values, strict=True))).items():
                *path, last = key.split(".")
                section = queued
                for part in path:
                    section = section[part]
                section[last] = yaml.safe_load(value)
            (sweep,) = [s for s, keys in SWEEPS.items() if set(varied) <= set(keys)]
            ours = settings(queued)
            assert {k: v for k, v in ours.items() if k not in SWEEPS[sweep]} == {
                k: v for k, v in fixed.items() if k not in SWEEPS[sweep]
            }
            seen[sweep].add(swept_value(sweep, queued))
    assert seen["loss"] == {"contrastive", "mnrl", "cached_mnrl", "gist", "contrastive, hard negatives"}
    assert len(seen["pos_ratio"]) == 8 and len(seen["augment_p"]) == 6
