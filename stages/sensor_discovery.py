"""Stage sensor_discovery: the teacher lists sensors for each D_source equipment class; the KG grows.

python stages/sensor_discovery.py <tables_dir> <kg_dir> <out_dir> <kg_out_dir> <metrics.json>
"""

import json
import sys
from pathlib import Path

import mlflow

from alia.kg import KnowledgeGraph
from alia.params import load_params
from alia.phase1 import add_discovered_sensors, discover_sensors
from alia.prompts import load_prompt
from alia.tables import read_tables
from alia.teacher import Teacher, TeacherConfig
from alia.tracking import start_run
from alia.vocabulary import Canonicaliser

tables_dir, kg_dir, out_dir, kg_out_dir, metrics_file = sys.argv[1:6]
params = load_params("sensor_discovery")
teacher_config = TeacherConfig(**load_params("teacher"))

tables = read_tables(tables_dir)
classes = tables["equipment_classes"]["equipment_class"].tolist()[: params["classes"]]
vocabulary = tables["vocabulary"]
known_sensors = set(vocabulary.loc[vocabulary["kind"] == "sensor", "name"])
prompt = load_prompt("sensor_discovery")

with Teacher(teacher_config, params["cache"], server_log="logs/teacher_server.log") as teacher:
    answers, sensors = discover_sensors(
        teacher,
        prompt,
        classes,
        Canonicaliser.from_yaml(params["vocabulary_rules"]),
        known_sensors,
        params["max_sensors"],
    )
kg = KnowledgeGraph.read(kg_dir)
new_edges = add_discovered_sensors(kg, sensors, prompt)
kg.write(kg_out_dir)

Path(out_dir).mkdir(parents=True, exist_ok=True)
answers.to_parquet(Path(out_dir) / "answers.parquet", index=False)
sensors.to_parquet(Path(out_dir) / "sensors.parquet", index=False)
metrics = {
    "classes": len(classes),
    "answers_ok": int(answers["ok"].sum()),
    "sensors": len(sensors),
    "new_sensor_names": int(sensors.loc[~sensors["in_vocabulary"], "sensor"].nunique()),
    "kg_new_edges": new_edges,
    "teacher": teacher.metrics(),
}
Path(metrics_file).write_text(json.dumps(metrics, indent=2) + "\n")
with start_run(
    "sensor_discovery", params={"sensor_discovery": params, "teacher": teacher_config.model_dump()}
):
    mlflow.log_metrics({k: v for k, v in metrics.items() if k != "teacher"})
    mlflow.log_metrics({f"teacher.{k}": v for k, v in metrics["teacher"].items()})
print(json.dumps(metrics))
