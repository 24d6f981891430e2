"""Stage tables: validate the raw ISO tables and write them as normalised Parquet.

python stages/tables.py <raw_dir> <vocabulary_rules.yaml> <out_dir> <metrics.json>
"""

import json
import sys
from pathlib import Path

from alia.tables import build_tables, write_tables
from alia.vocabulary import Canonicaliser

raw_dir, rules_file, out_dir, metrics_file = sys.argv[1:5]

tables = build_tables(raw_dir, Canonicaliser.from_yaml(rules_file))
write_tables(tables, out_dir)

Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
Path(metrics_file).write_text(json.dumps(tables.counts(), indent=2) + "\n")
print(json.dumps(tables.counts()))
