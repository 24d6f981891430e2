"""The run report: one self-contained HTML page (alia.pages) that renders offline, its sections
built here from the stages' metrics files as Vega-Lite charts and plain tables.
"""

from __future__ import annotations

import html
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from alia.core.io import read_json, read_parquet, write_text
from alia.core.params import load_params
from alia.core.precision import device, resolve_dtype
from alia.kd.corpora import corpus_batches, corpus_texts
from alia.pages import bounds, chart, grouped_bars, interval, loss_chart, offline_page, table

# --- which run ------------------------------------------------------------------------------------

# The settings that shape the page's figures, as a reader names them: label -> params.yaml key.
# dvc.yaml lists the same keys as the report stage's params, so a change of one rebuilds the page.
KEY_SETTINGS = {
    "teacher endpoint": "teacher.base_url",
    "teacher model": "teacher.model",
    "D_source classes (of 44)": "sensor_discovery.classes",
    "student variants": "train_student.variants",
    "student epochs": "train_student.sft.num_train_epochs",
    "LoRA rank": "train_student.lora.r",
    "D_eval questions scored (0: all 2,667)": "mcqa.sets.d_eval.sample",
    "embedder loss": "train_embedder.loss",
    "embedder seeds": "train_embedder.seeds",
    "embedder epochs": "train_embedder.training.num_train_epochs",
    "agent steps at most": "agent.max_steps",
}
# Written by the run itself, so a change there does not make the code or settings differ from the commit.
RUN_OUTPUTS = ("dvc.lock", "metrics")


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def commit_state() -> dict[str, Any]:
    """The commit checked out, and the tracked files (code, params, prompts) that differ from it,
    the run's own outputs aside; {} outside a git checkout."""
    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return {}
    excluded = [f":(exclude){path}" for path in RUN_OUTPUTS]
    changed = _git("diff", "--name-only", "HEAD", "--", ".", *excluded).splitlines()
    return {"commit": commit, "date": _git("log", "-1", "--format=%cI"), "changed": changed}


def _setting(params: dict[str, Any], key: str) -> str:
    value: Any = params
    for part in key.split("."):
        value = value.get(part, "-") if isinstance(value, dict) else "-"
    return ", ".join(map(str, value)) if isinstance(value, dict | list) else str(value)


def cpu_model() -> str:
    """The processor's name as Linux reports it, else the platform's."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_section(params_file: Path) -> str:
    """Which run the page shows: the commit (and what differed from it), the settings that shape its
    figures, and the machine the page was built on."""
    state = commit_state()
    if not state:
        commit = "not a git checkout"
    elif state["changed"]:
        shown = ", ".join(state["changed"][:5]) + (" ..." if len(state["changed"]) > 5 else "")
        commit = f"{state['commit']} ({state['date']}), with uncommitted changes to {shown}"
    else:
        commit = f"{state['commit']} ({state['date']}), no uncommitted change to code or settings"
    params = {key.split(".")[0]: load_params(key.split(".")[0], params_file) for key in KEY_SETTINGS.values()}
    settings = [
        {"setting": label, "value": _setting(params, key), "params.yaml": key}
        for label, key in KEY_SETTINGS.items()
    ]
    machine = (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}; "
        f"torch computes on {device()}, in {resolve_dtype('auto')} where a dtype is auto"
    )
    return "\n".join(
        [
            "<h2>This run</h2>",
            f"<p><b>Commit</b>: {html.escape(commit)}<br><b>Built on</b>: {html.escape(machine)}</p>",
            table(settings),
        ]
    )


# --- the sections -------------------------------------------------------------------------------


def corpora_section(corpus_stats: Path, corpus_paths: list[Path], sample_chars: int = 400) -> str:
    stats = read_json(corpus_stats)
    # Short headers, the tokens in the chart below: the file's nine columns overflowed a laptop's window.
    rows = [
        {
            "corpus": name,
            "passages": counts["passages"],
            "all facts": counts["full_coverage"],
            "coverage": counts["mean_coverage"],
            "foreign": counts["mean_foreign_entities"],
            "contradictions": f"{counts['contradictions']} in {counts['passages_with_contradictions']}",
        }
        for name, counts in stats.items()
    ]
    tokens = [
        {"corpus": name, "tokenizer": key.removeprefix("tokens_"), "tokens": value}
        for name, counts in stats.items()
        for key, value in counts.items()
        if key.startswith("tokens_")
    ]
    parts = [
        "<h2>Corpora</h2>",
        "<p>Per corpus (docs/corpora.md): the share of passages that state every fact of their asset "
        "(<i>all facts</i>), the mean share stated (<i>coverage</i>), the mean number of sensors, failure "
        "modes and classes a passage names outside its facts (<i>foreign</i>), and contradictions of the "
        "tables in so many passages.</p>",
        table(rows),
    ]
    parts.append(
        chart(
            "corpus_tokens",
            {
                "title": "tokens per corpus",
                "data": {"values": tokens},
                "mark": "bar",
                "encoding": {
                    "y": {"field": "corpus", "type": "nominal"},
                    "x": {"field": "tokens", "type": "quantitative"},
                    "yOffset": {"field": "tokenizer"},
                    "color": {"field": "tokenizer", "type": "nominal"},
                },
            },
        )
    )
    for path in corpus_paths:
        name = path.name.removesuffix(".parquet")
        first = next(corpus_batches(path, batch_size=1), None)  # a paper-scale corpus is not read whole
        sample = corpus_texts(first)[0][:sample_chars] if first is not None and len(first) else ""
        parts.append(f"<h3>{html.escape(name)}: a sample</h3><blockquote>{html.escape(sample)}…</blockquote>")
    return "\n".join(parts)


def teacher_section(stage_metrics: list[Path]) -> str:
    """Per teacher stage (a folder: one file per variant): prompts, the share whose answer parsed,
    re-asks and tokens. The parse rate is what differs most between two machines running the same
    local teacher (docs/teacher.md)."""
    rows = []
    files = [f for p in stage_metrics for f in (sorted(p.glob("*.json")) if p.is_dir() else [p])]
    for path in files:
        teacher = read_json(path).get("teacher")
        if teacher:
            stage = path.stem if path.parent.name == "metrics" else f"{path.parent.name}@{path.stem}"
            rows.append({"stage": stage, **teacher})
    return "<h2>The teacher's answers</h2>" + table(rows)


def degrees(kg_dir: Path) -> pd.DataFrame:
    """Each node of the graph with its kind and degree (edges in and out)."""
    nodes, edges = read_parquet(kg_dir / "nodes.parquet"), read_parquet(kg_dir / "edges.parquet")
    count = pd.concat([edges["src"], edges["dst"]]).value_counts()
    return nodes[["id", "type"]].assign(degree=nodes["id"].map(count).fillna(0).astype(int))


def kg_section(kg_metrics: Path, kg_dir: Path, hubs: int = 8) -> str:
    """The graph's counts, its degree distribution per node kind, and its best-connected nodes."""
    counts = read_json(kg_metrics)
    rows = [
        {"element": f"{group}: {name}", "count": value}
        for group in ("nodes", "edges")
        for name, value in counts[group].items()
        if name != "total"
    ]
    spec = {
        "title": "knowledge graph",
        "data": {"values": rows},
        "mark": "bar",
        "encoding": {
            "y": {"field": "element", "type": "nominal", "sort": None},
            "x": {"field": "count", "type": "quantitative"},
        },
    }
    totals = [
        {"nodes": counts["nodes"]["total"], "edges": counts["edges"]["total"], **counts["edges_by_source"]}
    ]
    nodes = degrees(kg_dir)
    distribution = {
        "title": "degree distribution: nodes by the number of edges they touch",
        "data": {"values": nodes[["type", "degree"]].to_dict("records")},
        "mark": "bar",
        "encoding": {
            "x": {"field": "degree", "bin": {"maxbins": 30}, "title": "edges per node (in and out)"},
            "y": {"aggregate": "count", "title": "nodes"},
            "color": {"field": "type", "type": "nominal", "title": "node kind"},
        },
    }
    top = nodes.sort_values(["degree", "id"], ascending=[False, True]).head(hubs)
    return "\n".join(
        [
            "<h2>Knowledge graph</h2>",
            table(totals),
            chart("kg_counts", spec),
            chart("kg_degrees", distribution),
            f"<p>The {hubs} best-connected nodes (<code>alia kg &lt;node&gt;</code> lists their edges):</p>",
            table(top.to_dict("records")),
        ]
    )


def training_section(student_curves: list[Path], embedder_curve: Path) -> str:
    students = [{"run": path.stem, **point} for path in student_curves for point in read_json(path)]
    embedder = [{"run": "served seed", **point} for point in read_json(embedder_curve)]
    return "\n".join(
        [
            "<h2>Training</h2>",
            loss_chart("student_loss", "student adapters: training loss", students),
            loss_chart("embedder_loss", "embedder: training loss", embedder),
        ]
    )


def mcqa_section(mcqa_metrics: list[Path], question_set: str = "d_eval", mode: str = "letter") -> str:
    """Accuracy per model (the teacher's among them) on FailureSensorIQ's Acc_Sel and Acc_El questions
    (failure mode -> sensor; alia.student.scoring.SUBSETS), each with its 95% interval."""
    points, rows = [], []
    for path in mcqa_metrics:
        scores = read_json(path).get(question_set, {}).get(mode)
        if not scores:
            continue
        row = {"model": path.stem, "questions": scores.get("questions_all")}
        for form, label in (("sel", "Acc_Sel"), ("el", "Acc_El")):
            if f"acc_{form}" not in scores:
                continue
            accuracy, (low, high) = scores[f"acc_{form}"], scores[f"acc_{form}_ci95"]
            points.append({"model": path.stem, "form": label, "accuracy": accuracy, "low": low, "high": high})
            row[label] = bounds(accuracy, [low, high])
        rows.append(row)
    spec = {
        "title": f"{question_set} accuracy ({mode} scoring), 95% intervals",
        "data": {"values": points},
        "facet": {"column": {"field": "form", "type": "nominal", "title": None}},
        "spec": {
            "layer": [
                {
                    "mark": "rule",
                    "encoding": {
                        "y": {"field": "model", "type": "nominal"},
                        "x": {"field": "low", "type": "quantitative", "title": "accuracy"},
                        "x2": {"field": "high"},
                    },
                },
                {
                    "mark": {"type": "point", "filled": True},
                    "encoding": {
                        "y": {"field": "model", "type": "nominal"},
                        "x": {"field": "accuracy", "type": "quantitative"},
                    },
                },
            ]
        },
    }
    return "\n".join(["<h2>Multiple-choice questions</h2>", table(rows), chart("mcqa", spec)])


def embedder_section(embedder_metrics: Path, metric: str = "map@100") -> str:
    results = read_json(embedder_metrics)
    tasks = [task for task in results["finetuned"] if task != "macro"] + ["macro"]
    rows, points = [], []
    for task in tasks:
        row = {"task": task, "queries": results["pretrained"][task].get("queries", "")}
        for system in ("pretrained", "finetuned", "bm25"):
            scores = results[system][task]
            row[system] = interval(scores[metric], scores.get(f"{metric}_ci95"))
            points.append({"task": task, "system": system, metric: scores[metric]})
        diff = results["finetuned_minus_pretrained"][task]
        row["finetuned - pretrained"] = interval(diff[metric], diff.get(f"{metric}_ci95"))
        rows.append(row)
    spec = grouped_bars(
        f"{metric} per task ({results['split']} split, {results['seeds']} seeds)", points, "task", metric
    )
    return "\n".join([f"<h2>Embedder ({metric})</h2>", table(rows), chart("embedder", spec)])


# The agent's systems (alia.agent.evaluation), in the order the table shows them, for the page's readers
AGENT_SYSTEMS = {
    "oracle": "the right tools with the gold arguments, the fine-tuned embedder: the ceiling the tools allow",
    "oracle_pretrained": "the same policy over the embedder before fine-tuning",
    "oracle_bm25": "the same policy over BM25",
    "closed_book": "the agent's LLM alone, no tools",
    "react": "the ReAct agent over the fine-tuned embedder's tools",
}


def agent_section(agent_metrics: Path) -> str:
    """The systems' F1, recall and precision with intervals, overall and per kind, their counts, and the
    paired comparisons, each system said in words."""
    metrics = read_json(agent_metrics)
    systems = {name: metrics["systems"][name] for name in AGENT_SYSTEMS if name in metrics["systems"]}
    rows, points = [], []
    for name, result in systems.items():
        o, counts = result["overall"], result["counts"]
        rows.append(
            {"system": name, "what it is": AGENT_SYSTEMS[name], "questions": o["questions"]}
            | {m: bounds(o[m], o[f"{m}_ci95"]) for m in ("f1", "recall", "precision", "exact")}
            | {"tool calls": counts["tool_calls"], "repeated calls": counts["repeated_calls"],
               "parse failures": counts["parse_failures"], "no answer": counts["no_answer"],
               "out of steps": counts["stopped"]}
        )  # fmt: skip
        points += [{"kind": k, "system": name, "f1": v["f1"]} for k, v in result["kinds"].items()]
    comparisons = [
        {"comparison": pair, "questions": c["questions"], "delta F1": bounds(c["delta_f1"], c["ci95"]),
         "p (Wilcoxon, clusters)": c["p_wilcoxon"], "smallest detectable": c["mde"]}
        for pair, c in metrics["comparisons"].items() if c["questions"]
    ]  # fmt: skip
    title = f"F1 per kind of question ({metrics['split']} split, {metrics['questions']} questions)"
    spec = grouped_bars(title, points, "kind", "f1", "mean F1 of the gold items")
    note = (
        f"<p>{metrics['questions']} open questions about the {metrics['split']} split's assets "
        f"(the ReAct agent answers {metrics['react_questions']} of them); an answer's items are matched "
        "to the gold list through the canonical vocabulary. Intervals: 95%, over clusters of questions "
        "about one asset's sensor or failure mode. docs/agent.md says how to read them.</p>"
    )
    return "\n".join(["<h2>Agent</h2>", note, table(rows), table(comparisons), chart("agent", spec)])


# --- the headline: the few figures `dvc metrics show` and `dvc exp show` print --------------------


def headline(mcqa_metrics: list[Path], embedder_metrics: Path, agent_metrics: Path) -> dict[str, Any]:
    """The run's figures a table of experiments compares, one short column each: every model's accuracy
    on the held-out question set (`acc.<model>`, letter scoring), the fine-tuned embedder's macro MAP@100
    and the agent's F1 at its ceiling and as ReAct. Their intervals and breakdowns stay in each stage's
    own metrics file (DVC outputs, not metrics: a table of all of them is thousands of columns wide)."""
    figures: dict[str, Any] = {"acc": {}}
    for path in mcqa_metrics:
        scores = read_json(path).get("d_eval", {}).get("letter", {})
        if "acc_all" in scores:
            figures["acc"][path.stem] = round(scores["acc_all"], 4)
    figures["map@100"] = round(read_json(embedder_metrics)["finetuned"]["macro"]["map@100"], 4)
    systems = read_json(agent_metrics)["systems"]
    agents = [name for name in ("oracle", "react") if name in systems]
    figures["f1"] = {name: round(systems[name]["overall"]["f1"], 4) for name in agents}
    return figures


def write_report(sections: list[str], out_file: Path, title: str = "alia: the run") -> None:
    page = offline_page(title).replace("{refresh_tag}", "")
    body = "\n".join([f"<h1>{html.escape(title)}</h1>", *sections])
    write_text(out_file, page.replace("{plot_divs}", body))
