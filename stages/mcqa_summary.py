"""Stage mcqa_summary: one Markdown table comparing every evaluated student.

python stages/mcqa_summary.py <mcqa_metrics_dir> <summary.md>
"""

import sys
from pathlib import Path

from alia import errors
from alia.scoring import summary_table
from alia.tables import read_json

errors.install()  # a known failure prints one line (the stages that end with alia.tracking get this there)
metrics_dir, summary_file = Path(sys.argv[1]), Path(sys.argv[2])
results = {path.stem: read_json(path) for path in sorted(metrics_dir.glob("*.json"))}
summary_file.write_text(summary_table(results))
print(summary_file.read_text())
