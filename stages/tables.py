"""Stage tables: validate the raw ISO tables and write them as normalised Parquet.

python stages/tables.py <raw_dir> <vocabulary_rules.yaml> <out_dir> <metrics.json>
"""

import sys

from alia.core.tracking import finish_stage
from alia.data.tables import build_tables, write_tables
from alia.data.vocabulary import Canonicaliser

raw_dir, rules_file, out_dir, metrics_file = sys.argv[1:5]

tables = build_tables(raw_dir, Canonicaliser.from_yaml(rules_file))
write_tables(tables, out_dir)
finish_stage("tables", tables.counts(), metrics_file)
