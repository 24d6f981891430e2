"""Stage mcqa_summary: one Markdown table comparing every evaluated student.

python stages/mcqa_summary.py <mcqa_metrics_dir> <summary.md>
"""

import sys
from pathlib import Path

from alia.core.io import read_json, write_text
from alia.core.tracking import check_outputs
from alia.student.summary import summary_table

metrics_dir, summary_file = Path(sys.argv[1]), Path(sys.argv[2])
check_outputs(summary_file)
results = {path.stem: read_json(path) for path in sorted(metrics_dir.glob("*.json"))}
write_text(summary_file, summary_table(results))
print(summary_file.read_text())
