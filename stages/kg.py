"""Stage kg: the table-sourced knowledge graph, its counts as metrics and a bar plot.

python stages/kg.py <tables_dir> <out_dir> <metrics.json> <plot.json>
"""

import json
import sys
from pathlib import Path

import mlflow

from alia.kg import from_tables
from alia.params import load_params
from alia.tables import read_tables
from alia.tracking import start_run

tables_dir, out_dir, metrics_file, plot_file = sys.argv[1:5]
params = load_params("kg")

kg = from_tables(read_tables(tables_dir), include_eval_assets=params["include_eval_assets"])
kg.write(out_dir, graphml=params["graphml"])

counts = kg.counts()
Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
Path(metrics_file).write_text(json.dumps(counts, indent=2) + "\n")
plot_rows = [
    {"element": f"{group[:-1]}:{kind}", "count": n}
    for group in ("nodes", "edges")
    for kind, n in counts[group].items()
    if kind != "total"
]
Path(plot_file).parent.mkdir(parents=True, exist_ok=True)
Path(plot_file).write_text(json.dumps(plot_rows, indent=2) + "\n")

with start_run("kg", params=params):
    mlflow.log_metrics({f"{group}.{kind}": n for group, by in counts.items() for kind, n in by.items()})
print(json.dumps(counts))
