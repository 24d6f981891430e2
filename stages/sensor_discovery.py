"""Stage sensor_discovery: the teacher lists sensors for each D_source equipment class; the KG grows.

python stages/sensor_discovery.py <tables_dir> <kg_dir> <out_dir> <kg_out_dir> <metrics.json>
"""

import sys
from pathlib import Path

from alia.generation import finish_stage, stage_teacher
from alia.kg import KnowledgeGraph
from alia.params import load_params
from alia.phase1 import add_discovered_sensors, discover_sensors, extend_vocabulary
from alia.prompts import load_prompt
from alia.tables import read_tables
from alia.vocabulary import Canonicaliser

tables_dir, kg_dir, out_dir, kg_out_dir, metrics_file = sys.argv[1:6]
params = load_params("sensor_discovery")

tables = read_tables(tables_dir)
classes = tables["equipment_classes"]["equipment_class"].tolist()[: params["classes"]]
vocabulary = tables["vocabulary"]
known_sensors = set(vocabulary.loc[vocabulary["kind"] == "sensor", "name"])
rules = Canonicaliser.from_yaml(params["vocabulary_rules"])
prompt = load_prompt("sensor_discovery")

with stage_teacher(params) as teacher:
    answers, sensors = discover_sensors(teacher, prompt, classes, rules, known_sensors, params["max_sensors"])
kg = KnowledgeGraph.read(kg_dir)
new_edges = add_discovered_sensors(kg, sensors, prompt)
kg.write(kg_out_dir)

Path(out_dir).mkdir(parents=True, exist_ok=True)
answers.to_parquet(Path(out_dir) / "answers.parquet", index=False)
sensors.to_parquet(Path(out_dir) / "sensors.parquet", index=False)
extend_vocabulary(vocabulary, sensors, prompt).to_parquet(Path(out_dir) / "vocabulary.parquet", index=False)
metrics = {
    "classes": len(classes),
    "answers_ok": int(answers["ok"].sum()),
    "sensors": len(sensors),
    "new_sensor_names": int(sensors.loc[~sensors["in_vocabulary"], "sensor"].nunique()),
    "kg_new_edges": new_edges,
}
finish_stage("sensor_discovery", params, teacher, metrics, metrics_file)
