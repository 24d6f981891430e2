"""Offline HTML pages and their building blocks: Vega-Lite charts and plain tables.

A page carries Vega, Vega-Lite and vega-embed inlined from the vl-convert-python package, so that it
renders on a machine without internet (a plant network): DVC's own page loads them from a CDN.
"""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd

# DVC's plot templates are Vega-Lite 5 specs; vega-embed compiles them with the inlined Vega-Lite.
VEGA_LITE_VERSION = "5.21"
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>{title}</title>
    <script>{bundle}</script>
    <style>
        body {{ font-family: sans-serif; margin: 2em; }}
        table {{ border-collapse: collapse; margin: 1em 0; }}
        td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
        th:first-child, td:first-child {{ text-align: left; }}
        blockquote {{ color: #444; max-width: 60em; }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>"""


def offline_page(title: str = "DVC Plot") -> str:
    """An HTML page with the Vega libraries inlined and dvc-render's placeholders ({plot_divs},
    {refresh_tag}); without a {scripts} placeholder DVC adds no CDN script tags."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(
        "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;",
        vl_version=VEGA_LITE_VERSION,
    )
    # a literal "</script" inside the bundle would end the script element early
    bundle = bundle.replace("</script", "<\\/script")
    # the two placeholders stay for dvc-render to fill
    placeholders = {"refresh_tag": "{refresh_tag}", "plot_divs": "{plot_divs}"}
    return PAGE.format(title=html.escape(title), bundle=bundle, **placeholders)


# --- building blocks --------------------------------------------------------------------------


def chart(name: str, spec: dict[str, Any]) -> str:
    """A Vega-Lite spec as a div that vega-embed draws (the same markup dvc-render writes)."""
    spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", **spec}
    return (
        f'<div id="{name}" class="chart"></div>\n'
        f"<script>vegaEmbed('#{name}', {json.dumps(spec)}, {{actions: false}});</script>"
    )


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(nothing)</p>"
    return pd.DataFrame(rows).to_html(index=False, escape=True, border=0, na_rep="")


def interval(value: float, half_width: float | None) -> str:
    return f"{value:.3f}" if half_width is None else f"{value:.3f} ± {half_width:.3f}"


def bounds(value: float, ci95: list[float]) -> str:
    low, high = ci95
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def loss_chart(name: str, title: str, rows: list[dict[str, Any]]) -> str:
    spec = {
        "title": title,
        "data": {"values": rows},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "step", "type": "quantitative"},
            "y": {"field": "loss", "type": "quantitative", "scale": {"zero": False}},
            "color": {"field": "run", "type": "nominal"},
        },
    }
    return chart(name, spec)


def grouped_bars(
    title: str, points: list[dict], category: str, value: str, value_title: str | None = None
) -> dict:
    """A bar per system within each category, the systems told apart by colour (Vega-Lite)."""
    x = {"field": value, "type": "quantitative"} | ({"title": value_title} if value_title else {})
    return {
        "title": title,
        "data": {"values": points},
        "mark": "bar",
        "encoding": {
            "y": {"field": category, "type": "nominal", "sort": None},
            "x": x,
            "yOffset": {"field": "system"},
            "color": {"field": "system", "type": "nominal"},
        },
    }
