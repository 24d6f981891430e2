"""Stage sensor_discovery: the teacher lists sensors for each D_source equipment class.

python stages/sensor_discovery.py <tables_dir> <vocabulary_rules.yaml> <out_dir> <cache.sqlite> <metrics.json>
"""

import sys
from pathlib import Path

from alia.core.io import write_parquet
from alia.core.params import load_params
from alia.core.tracking import check_outputs, finish_stage
from alia.data.tables import read_tables
from alia.data.vocabulary import Canonicaliser
from alia.kd.phase1 import discover_sensors, extend_vocabulary
from alia.llm.prompts import load_prompt
from alia.llm.teacher import stage_teacher

tables_dir, rules_file, out_dir, cache, metrics_file = map(Path, sys.argv[1:6])
check_outputs(out_dir, cache, metrics_file)  # an unwritable folder stops it now
params = load_params("sensor_discovery")

tables = read_tables(tables_dir)
classes = tables["equipment_classes"]["equipment_class"].tolist()[: params["classes"]]
vocabulary = tables["vocabulary"]
known_sensors = set(vocabulary.loc[vocabulary["kind"] == "sensor", "name"])
prompt = load_prompt("sensor_discovery")
with stage_teacher(params.get("teacher"), cache) as teacher:
    answers, sensors = discover_sensors(
        teacher, prompt, classes, Canonicaliser.from_yaml(rules_file), known_sensors, params["max_sensors"]
    )

write_parquet(answers, out_dir / "answers.parquet")
write_parquet(sensors, out_dir / "sensors.parquet")
write_parquet(extend_vocabulary(vocabulary, sensors, prompt), out_dir / "vocabulary.parquet")
metrics = {
    "classes": len(classes),
    "answers_ok": int(answers["ok"].sum()),
    "sensors": len(sensors),
    "new_sensor_names": int(sensors.loc[~sensors["in_vocabulary"], "sensor"].nunique()),
}
finish_stage("sensor_discovery", metrics, metrics_file, params, teacher=teacher)
