"""Pictures that render offline: `dvc plots show` and the report stage, looked at the way a person would,
in headless Chromium with every host name unresolvable (no CDN can be reached)."""

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from alia.core.io import read_json
from alia.report import offline_page

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
def test_the_report_draws_its_charts_offline(tmp_path):
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    pd.DataFrame(
        {"doc_id": ["d1"], "text": ["Cavitation in a centrifugal pump shows as vibration."]}
    ).to_parquet(corpora / "kd_base.parquet")
    pd.DataFrame({"question": ["Which sensor sees cavitation?"], "answer": ["Vibration."]}).to_parquet(
        corpora / "kd_qa.parquet"
    )
    metrics = REPO / "metrics"
    report = tmp_path / "report.html"
    subprocess.run(
        [sys.executable, REPO / "stages" / "report.py", report,
         "--corpus-stats", metrics / "corpus_stats.json",
         "--corpora", corpora / "kd_base.parquet", corpora / "kd_qa.parquet", "--kg", metrics / "kg.json",
         "--teacher", metrics / "relevance_check.json", metrics / "kd_rephrase",
         "--student-curves", metrics / "plots" / "train_student",
         "--embedder-curve", metrics / "plots" / "train_embedder.json", "--mcqa", metrics / "mcqa",
         "--embedder", metrics / "embedder.json", "--agent", metrics / "agent.json"],
        check=True,
    )  # fmt: skip
    text = report.read_text(encoding="utf-8")
    assert "Cavitation in a centrifugal pump" in text and "Which sensor sees cavitation?" in text
    # the teacher's parse rate per stage, a folder of variants as stage@variant
    teacher = pd.read_html(io.StringIO(text.split("The teacher's answers</h2>")[1]))[0]
    assert teacher["stage"].tolist() == ["relevance_check", "kd_rephrase@qa", "kd_rephrase@scholar",
                                         "kd_rephrase@toddler", "kd_rephrase@wikipedia"]  # fmt: skip
    relevance = read_json(metrics / "relevance_check.json")["teacher"]
    assert teacher["parse_failures"][0] == relevance["parse_failures"]
    assert drawn_charts(report, tmp_path) == (6, 6)
    assert screenshot(report, tmp_path / "report.png", tmp_path) > 50
