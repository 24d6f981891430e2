"""Stage kg: the one knowledge graph, from the tables and the facts of sensor_discovery,
relevance_check and kd_extend; its counts (by type and by origin) as metrics and a bar plot.

python stages/kg.py <tables_dir> <discovery_dir> <relevance_dir> <key_entities.parquet> <out_dir>
    <metrics.json> <plot.json>
"""

import sys
from pathlib import Path

from alia.core.io import read_parquet
from alia.core.params import load_params
from alia.core.tracking import finish_stage
from alia.data import kg
from alia.data.tables import read_tables
from alia.llm.prompts import load_prompt

tables_dir, discovery_dir, relevance_dir, entities_file, out_dir, metrics_file, plot_file = map(
    Path, sys.argv[1:8]
)
params = load_params("kg")

graph = kg.build(
    read_tables(tables_dir),
    read_parquet(discovery_dir / "sensors.parquet"),
    read_parquet(relevance_dir / "relevance.parquet"),
    read_parquet(entities_file),
    {name: load_prompt(name) for name in ("sensor_discovery", "relevance_check", "key_entities")},
    params["include_eval_assets"],
)
graph.write(out_dir, graphml=params["graphml"])

counts = graph.counts()
plot_rows = [
    {"element": f"{group[:-1]}:{kind}", "count": n}
    for group in ("nodes", "edges")
    for kind, n in counts[group].items()
    if kind != "total"
]
finish_stage("kg", counts, metrics_file, params, plots={plot_file: plot_rows})
