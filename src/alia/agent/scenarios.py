"""The agent's question set: open questions about the assets of one split, built from the tables, with
gold item lists, in IBM AssetOpsBench's scenario schema (`id, text, asset_name, characteristic_form,
answer`), the schema of FailureSensorIQ's open-ended scenarios ("List all failure modes of <asset>
that can be detected by <sensors>").

Each scenario also keeps its `kind` and the gold `arguments` of the tools that answer it (what the
oracle policy calls, alia.agent.systems); a scenario file from elsewhere loads through the same
`read_scenarios`, its `answer` a list or a comma-separated string, and the systems that need no gold
arguments (closed book, the ReAct agent) answer it.

Kinds that need one tool, and kinds that need several steps:

| kind | question about | gold | tools |
|---|---|---|---|
| fm2s | an asset's failure mode | its sensors | sensors_for_failure_mode |
| s2fm | an asset's sensor | the failure modes it detects | failure_modes_for_sensor |
| a2s | an asset | its sensors | sensors_for_asset |
| fm2cmp | an asset's failure mode | its components | components_for_failure_mode |
| sensors_fm | an asset, two sensors | the failure modes both detect | failure_modes_for_sensor x 2 |
| symptom | an asset's abnormal sensor | the components behind it | failure_modes_for_sensor, then |
| | | | components_for_failure_mode per failure mode |
| confirm | an asset's failure mode | its sensors and components | sensors_for_failure_mode, |
| | | | components_for_failure_mode |
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alia.core.io import TableError, read_text, write_text

# AssetOpsBench's scenario fields, then ours
SCHEMA = ["id", "text", "asset_name", "characteristic_form", "answer"]
COLUMNS = [*SCHEMA, "kind", "arguments", "cluster"]

KINDS = {
    # kind: (the question, what the answer lists)
    "fm2s": ("List all sensors that can detect {failure_mode} on a {asset}.", "sensors"),
    "s2fm": ("List all failure modes of a {asset} that can be detected by {sensor}.", "failure modes"),
    "a2s": ("List all sensors that monitor the condition of a {asset}.", "sensors"),
    "fm2cmp": ("Which components of a {asset} does {failure_mode} occur in?", "components"),
    "sensors_fm": (
        "List all failure modes of a {asset} that can be detected by both {sensor} and {sensor_2}.",
        "failure modes",
    ),
    "symptom": (
        "Sensor readings show abnormal {sensor} on a {asset}. Which components may be failing?",
        "components",
    ),
    "confirm": (
        "A {asset} may be developing {failure_mode}. Which sensors would confirm it, and which "
        "components are involved?",
        "sensors and components",
    ),
}
ONE_TOOL = ("fm2s", "s2fm", "a2s", "fm2cmp")


def build_scenarios(tasks: pd.DataFrame, split: str, max_per_kind: int, seed: int) -> pd.DataFrame:
    """Every question of each kind about the assets of `split` (at most `max_per_kind` of a kind, drawn
    with `seed`), gold items from the embedder's relevance judgements (ISO 17359 ticks, the taxonomy
    seed's components). Questions whose gold list is empty are left out."""
    rows = tasks[(tasks["split"] == split) & (tasks["asset"] != "")]
    relevant: dict[tuple[str, ...], list[str]] = {
        (t, *e): sorted(r) for t, e, r in zip(rows["task"], rows["entities"], rows["relevant"], strict=True)
    }

    def of(task: str) -> list[tuple[str, ...]]:
        return sorted(k[1:] for k in relevant if k[0] == task)

    def components(asset: str, failure_modes: list[str]) -> list[str]:
        return sorted({c for fm in failure_modes for c in relevant.get(("FM2CMP", asset, fm), [])})

    drafts: dict[str, list[tuple[dict[str, str], list[str]]]] = {
        "fm2s": [({"asset": a, "failure_mode": f}, relevant[("FM2S", a, f)]) for a, f in of("FM2S")],
        "s2fm": [({"asset": a, "sensor": s}, relevant[("S2FM", a, s)]) for a, s in of("S2FM")],
        "a2s": [({"asset": a}, relevant[("A2S", a)]) for (a,) in of("A2S")],
        "fm2cmp": [({"asset": a, "failure_mode": f}, relevant[("FM2CMP", a, f)]) for a, f in of("FM2CMP")],
        "sensors_fm": [
            (
                {"asset": a, "sensor": s, "sensor_2": s2},
                sorted(set(relevant[("S2FM", a, s)]) & set(relevant[("S2FM", a, s2)])),
            )
            for (a, s), (a2, s2) in itertools.combinations(of("S2FM"), 2)
            if a == a2
        ],  # fmt: skip
        "symptom": [
            ({"asset": a, "sensor": s}, components(a, relevant[("S2FM", a, s)])) for a, s in of("S2FM")
        ],
        "confirm": [
            ({"asset": a, "failure_mode": f}, sorted({*relevant[("FM2S", a, f)], *components(a, [f])}))
            for a, f in of("FM2S")
        ],
    }
    rng = np.random.default_rng(seed)
    scenarios = []
    for kind, (template, form) in KINDS.items():
        found = [(arguments, gold) for arguments, gold in drafts[kind] if gold]
        if len(found) > max_per_kind:
            found = [found[i] for i in sorted(rng.choice(len(found), max_per_kind, replace=False))]
        for arguments, gold in found:
            scenarios.append(
                {
                    "text": template.format(**arguments),
                    "asset_name": arguments["asset"],
                    "characteristic_form": f"A list of the {form}: {', '.join(gold)}.",
                    "answer": gold,
                    "kind": kind,
                    "arguments": arguments,
                }
            )
    out = pd.DataFrame(scenarios)
    out.insert(0, "id", [f"{split}-{i:03d}" for i in range(len(out))])
    out["cluster"] = [cluster_of(a) for a in out["arguments"]]
    return out[COLUMNS]


def cluster_of(arguments: dict[str, str]) -> str:
    """Questions about one asset's one sensor or failure mode are not independent (several kinds ask
    about it): the unit the intervals resample."""
    subject = arguments.get("failure_mode") or arguments.get("sensor") or ""
    return f"{arguments.get('asset', '')}\x1f{subject}"


def write_scenarios(scenarios: pd.DataFrame, path: str | Path) -> None:
    """One JSON object a line, the schema's fields first."""
    lines = [
        json.dumps({c: row[c] for c in COLUMNS if c != "cluster"}) for row in scenarios.to_dict("records")
    ]
    write_text(path, "\n".join(lines) + "\n")


def read_scenarios(path: str | Path) -> pd.DataFrame:
    """Scenarios of a JSONL (or JSON list) file in AssetOpsBench's schema: `id` and `text` required,
    `answer` a list of names or one comma- or semicolon-separated string; `kind` (else "scenario") and
    the gold tool `arguments` (else none) are kept where present."""
    path = Path(path)
    raw = read_text(path)
    if raw.lstrip().startswith("["):  # a JSON list
        records = _json(path, raw, 1)
    else:
        records = [_json(path, line, n) for n, line in enumerate(raw.splitlines(), 1) if line.strip()]
    rows = []
    for number, record in enumerate(records, 1):
        missing = [f for f in ("id", "text") if not record.get(f)]
        if missing:
            raise TableError(
                path, f"no {' or '.join(missing)} (expected the fields {SCHEMA})", row=f"scenario {number}"
            )
        arguments: dict[str, Any] = record.get("arguments") or {}
        rows.append(
            {
                "id": str(record["id"]),
                "text": str(record["text"]),
                "asset_name": str(record.get("asset_name") or arguments.get("asset") or ""),
                "characteristic_form": str(record.get("characteristic_form") or ""),
                "answer": answer_items(record.get("answer")),
                "kind": str(record.get("kind") or "scenario"),
                "arguments": arguments,
                "cluster": cluster_of(arguments) if arguments else f"id\x1f{record['id']}",
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def _json(path: Path, text: str, line: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise TableError(path, f"not JSON ({error.msg})", row=line + error.lineno - 1) from None


def answer_items(answer: Any) -> list[str]:
    """A gold answer as a list of names: a list as it is, a string split at commas and semicolons."""
    if answer is None:
        return []
    if isinstance(answer, str):
        return [part.strip() for part in answer.replace(";", ",").split(",") if part.strip()]
    return [str(item).strip() for item in answer if str(item).strip()]
