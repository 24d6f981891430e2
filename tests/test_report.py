"""Pictures that render offline: `dvc plots show` and the report stage, looked at the way a person would,
in headless Chromium with every host name unresolvable (no CDN can be reached)."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from alia.core.io import read_json
from alia.pages import offline_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)
BIN = Path(sys.executable).parent


def chromium(page: Path, user_dir: Path, *args: str) -> str:
    """What headless Chromium prints for the page (--dump-dom: the document after its scripts ran)."""
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: a CDN script would fail to load
        f"--user-data-dir={user_dir}", "--virtual-time-budget=20000", *args, page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def drawn_charts(page: Path, tmp_path: Path) -> tuple[int, int]:
    """(charts the page asks vega-embed for, charts drawn)."""
    asked = page.read_text(encoding="utf-8").count("vegaEmbed('#")
    dom = chromium(page, tmp_path / "chromium-dom", "--dump-dom")
    return asked, len(re.findall(r'class="marks"', dom))


def screenshot(page: Path, png: Path, tmp_path: Path) -> int:
    """Take a screenshot; the number of distinct colours in it (a blank page has one)."""
    from PIL import Image

    chromium(page, tmp_path / "chromium-shot", "--window-size=1200,3600", f"--screenshot={png}")
    return len(Image.open(png).convert("RGB").getcolors(maxcolors=1 << 20) or [])


def test_the_offline_page_inlines_vega_and_loads_nothing():
    page = offline_page()
    assert "<script src" not in page and "cdn.jsdelivr" not in page
    assert "window.vegaEmbed" in page and "{plot_divs}" in page and "{scripts}" not in page
    assert page.count("</script>") == 1  # the bundle's own "</script" strings are escaped


@pytest.mark.slow
@needs_chromium
def test_dvc_plots_show_draws_every_plot_offline(tmp_path):
    template = REPO / ".dvc" / "offline_plots.html"
    if not template.exists():  # `make install` writes it
        subprocess.run([BIN / "alia", "plots-page", str(template)], check=True)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], cwd=REPO, env=env, check=True)
    page = tmp_path / "plots" / "index.html"
    assert "cdn.jsdelivr" not in page.read_text(encoding="utf-8")
    asked, drawn = drawn_charts(page, tmp_path)
    assert asked >= 10 and drawn == asked


@pytest.mark.slow
@needs_chromium
def test_the_report_draws_its_charts_offline(tmp_path, tables):
    from alia.data.kg import from_tables

    kg_dir = tmp_path / "kg"
    from_tables(tables).write(kg_dir, graphml=False)
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    pd.DataFrame(
        {"doc_id": ["d1"], "text": ["Cavitation in a centrifugal pump shows as vibration."]}
    ).to_parquet(corpora / "kd_base.parquet")
    pd.DataFrame({"question": ["Which sensor sees cavitation?"], "answer": ["Vibration."]}).to_parquet(
        corpora / "kd_qa.parquet"
    )
    metrics = REPO / "metrics"
    report, headline = tmp_path / "report.html", tmp_path / "headline.json"
    subprocess.run(
        [sys.executable, REPO / "stages" / "report.py", report, headline,
         "--corpus-stats", metrics / "corpus_stats.json",
         "--params", REPO / "params.yaml",
         "--corpora", corpora / "kd_base.parquet", corpora / "kd_qa.parquet",
         "--kg", metrics / "kg.json", "--kg-dir", kg_dir,
         "--teacher", metrics / "relevance_check.json", metrics / "kd_rephrase",
         "--student-curves", metrics / "plots" / "train_student",
         "--embedder-curve", metrics / "plots" / "train_embedder.json", "--mcqa", metrics / "mcqa",
         "--embedder", metrics / "embedder.json", "--agent", metrics / "agent.json"],
        check=True, env=os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )  # fmt: skip
    text = report.read_text(encoding="utf-8")
    assert "Cavitation in a centrifugal pump" in text and "Which sensor sees cavitation?" in text
    # the corpora at a glance, six short columns (the file's nine overflowed a 1,280-pixel window)
    corpora_table = pd.read_html(io.StringIO(text.split("Corpora</h2>")[1].split("<h3>")[0]))[0]
    stats = read_json(metrics / "corpus_stats.json")
    assert corpora_table.columns.tolist() == ["corpus", "passages", "all facts", "coverage", "foreign",
                                              "contradictions"]  # fmt: skip
    assert corpora_table["corpus"].tolist() == list(stats)
    assert corpora_table["coverage"].tolist() == [s["mean_coverage"] for s in stats.values()]
    # the teacher's parse rate per stage, a folder of variants as stage@variant
    teacher = pd.read_html(io.StringIO(text.split("The teacher's answers</h2>")[1]))[0]
    assert teacher["stage"].tolist() == ["relevance_check", "kd_rephrase@qa", "kd_rephrase@scholar",
                                         "kd_rephrase@toddler", "kd_rephrase@wikipedia"]  # fmt: skip
    relevance = read_json(metrics / "relevance_check.json")["teacher"]
    assert teacher["parse_failures"][0] == relevance["parse_failures"]
    # the headline, the one file `dvc metrics show` prints: each model's accuracy as its own file says it
    figures = read_json(headline)
    for model in ("teacher", "student_instruct", "kd_qa"):
        scores = read_json(metrics / "mcqa" / f"{model}.json")["d_eval"]["letter"]
        assert figures["acc"][model] == round(scores["acc_all"], 4)
    oracle = read_json(metrics / "agent.json")["systems"]["oracle"]["overall"]
    assert figures["f1"]["oracle"] == round(oracle["f1"], 4)
    assert len(json.dumps(figures)) < 300  # a few figures, not a breakdown
    assert drawn_charts(report, tmp_path) == (8, 8)  # the agent's F1 per kind among them
    assert screenshot(report, tmp_path / "report.png", tmp_path) > 50


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args], cwd=cwd, check=True)


def test_the_report_says_which_run_it_shows(tmp_path, tmp_path_factory, monkeypatch):
    """The header: the commit, and the tracked files that differ from it, the run's own outputs
    (dvc.lock, metrics/) aside; the key settings as params.yaml has them; the machine."""
    from alia.report import KEY_SETTINGS, commit_state, run_section

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "metrics" / "a.json").write_text("{}")
    _git("init", "-q", cwd=tmp_path)
    _git("add", "-A", cwd=tmp_path)
    _git("commit", "-qm", "run", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # what a repro writes: not a change
    (tmp_path / "metrics" / "a.json").write_text('{"acc": 1}')
    assert commit_state()["changed"] == []
    header = run_section(tmp_path / "params.yaml")
    assert "no uncommitted change to code or settings" in header
    settings = pd.read_html(io.StringIO(header))[0].set_index("params.yaml")["value"]
    assert list(settings.index) == list(KEY_SETTINGS.values())
    assert settings["sensor_discovery.classes"] == "8" and settings["teacher.base_url"] == "local"
    assert settings["train_student.variants"] == "kd_base, kd_rephrase, kd_qa, kd_qa_raft, kd_extend"
    assert "cores" in header and "torch computes on cpu:" in header

    params = tmp_path / "params.yaml"
    params.write_text(params.read_text().replace("  classes: 8 ", "  classes: 44"))  # a setting changed
    header = run_section(params)
    assert "with uncommitted changes to params.yaml" in header
    settings = pd.read_html(io.StringIO(header))[0].set_index("params.yaml")["value"]
    assert settings["sensor_discovery.classes"] == "44"
    elsewhere = tmp_path_factory.mktemp("not_a_checkout")
    monkeypatch.chdir(elsewhere)
    assert commit_state() == {} and "not a git checkout" in run_section(params)


def test_the_graph_is_drawn_and_the_agent_figures_explained(tables, tmp_path):
    """The graph's degree distribution per node kind and its best-connected nodes, as its edges give
    them; the agent's systems said in words, their figures with intervals and their comparisons."""
    import json

    from alia.data.kg import from_tables
    from alia.report import agent_section, degrees, kg_section

    kg = from_tables(tables)
    kg.write(tmp_path / "kg", graphml=False)
    (tmp_path / "kg.json").write_text(json.dumps(kg.counts()))
    nodes = degrees(tmp_path / "kg")
    edges = kg.edges_frame()
    assert nodes["degree"].sum() == 2 * len(edges) and len(nodes) == len(kg.nodes_frame())
    hub = nodes.sort_values("degree").iloc[-1]
    assert hub["degree"] == ((edges["src"] == hub["id"]) | (edges["dst"] == hub["id"])).sum()
    section = kg_section(tmp_path / "kg.json", tmp_path / "kg")
    assert "vegaEmbed('#kg_degrees'" in section and '"title": "node kind"' in section
    top = pd.read_html(io.StringIO(section.split("best-connected nodes")[1]))[0]
    assert top["id"].iloc[0] == hub["id"] and len(top) == 8

    from alia.agent.evaluation import evaluation_metrics

    scored = pd.DataFrame({
        "system": ["oracle"] * 4 + ["react"] * 2, "id": list("abcdab"), "kind": list("xxyyxx"),
        "cluster": list("abcdab"), "f1": [1, 0.5, 0.5, 0, 0.5, 0.0], "precision": 0.5, "recall": 0.5,
        "exact": 0.0, "tool_calls": 1, "repeated_calls": [0, 0, 0, 0, 2, 1], "parse_failures": 0, "steps": 1,
        "no_answer": [False] * 5 + [True], "stopped": [False] * 4 + [True, True],
    })  # fmt: skip
    agent = {"split": "test", "questions": 4, "react_questions": 2, **evaluation_metrics(scored)}
    (tmp_path / "agent.json").write_text(json.dumps(agent))
    section = agent_section(tmp_path / "agent.json")
    systems, comparisons = pd.read_html(io.StringIO(section))
    systems = systems.set_index("system")
    assert list(systems.index) == ["oracle", "react"] and "ceiling" in systems.loc["oracle", "what it is"]
    assert systems.loc["oracle", "f1"].startswith("0.500 [") and systems.loc["react", "questions"] == 2
    assert systems.loc["react", "repeated calls"] == 1.5 and systems.loc["react", "out of steps"] == 2
    assert comparisons["comparison"].tolist() == ["oracle - react"]
    assert comparisons["delta F1"][0].startswith("0.500 [") and comparisons["questions"][0] == 2
    assert "vegaEmbed('#agent'" in section


def rendered(spec: dict) -> dict[str, list]:
    """What a chart shows once Vega lays it out (vl-convert's scenegraph): its axis titles, each axis's
    labels with their anchor (x, y) and alignment, and its legend's labels."""
    import vl_convert

    found: dict[str, list] = {"axis-title": [], "axis-label": [], "legend-label": []}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("role") in found:
                items = [
                    (i.get("text"), i.get("x", 0), i.get("y", 0), i.get("align", "center"))
                    for i in node.get("items", [])
                ]
                found[node["role"]].append(items)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(vl_convert.vegalite_to_scenegraph(spec))
    return found


def label_box(text: str, x: float, align: str, char_width: float = 5.6) -> tuple[float, float]:
    """The horizontal extent of an axis label anchored at x."""
    width = char_width * len(text)
    left = {"left": x, "right": x - width}.get(align, x - width / 2)
    return left, left + width


@pytest.mark.parametrize(
    "plot, series",
    [
        ("MAP@100 against augment_p", "task"),
        ("MAP@100 against pos_ratio", "task"),
        ("MAP@100 per task and loss", "loss"),
        ("metrics/plots/corpus_tokens.json", "student"),
    ],
)
def test_plots_say_what_they_show(plot, series):
    """Rendered as `dvc plots show` fills them: axis titles that name the measure (no bare "y"), a
    legend entry per series (not series told apart by dash alone), the labels of a bar chart's
    categories at least a line apart, and alternatives side by side, never stacked."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    shown = subprocess.run(
        ["dvc", "plots", "show", "--json"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    spec = json.loads(shown.stdout)["data"][plot][0]["content"]
    values = spec["data"]["values"]
    drawn = rendered(spec)
    titles = {text for items in drawn["axis-title"] for text, *_ in items}
    fields = {spec["encoding"][axis]["field"] for axis in ("x", "y")}
    assert len(titles) == 2 and not titles & (fields | {"y"}), titles  # more than the bare field names
    legend = {text for items in drawn["legend-label"] for text, *_ in items}
    assert legend == {str(row[series]) for row in values}
    # the horizontal axis's labels, as boxes (10-point text, ~5.6 px a character, placed by their
    # alignment: the first and last flush with the axis' ends), never overlap
    boxes = sorted(label_box(text, x, align) for text, x, _, align in drawn["axis-label"][0])
    for (_, right), (left, _) in zip(boxes, boxes[1:], strict=False):
        assert left >= right, boxes
    if spec["mark"]["type"] == "bar":
        assert spec["encoding"]["yOffset"]["field"] == series  # side by side within a category
        categories = next(items for items in drawn["axis-label"] if not items[0][0][0].isdigit())
        assert {text for text, *_ in categories} == {row[spec["encoding"]["y"]["field"]] for row in values}
        gaps = np.diff(sorted(y for _, _, y, _ in categories))
        assert gaps.min() >= 12, gaps  # a 10-point label needs ~12 px
