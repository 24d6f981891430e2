"""Stage report: one self-contained HTML page of the run (which run: commit, settings, machine; corpora,
knowledge graph, training curves, multiple-choice accuracy with intervals, the embedder per task, the
agent) that renders offline, and the run's headline figures: the metrics `dvc metrics show` prints.

python stages/report.py <report.html> <headline.json> --params <params.yaml> --corpus-stats <json>
    --corpora <corpus>... --kg <json> --kg-dir <dir> --teacher <json or dir>... --student-curves <dir>
    --embedder-curve <json> --mcqa <dir> --embedder <json> --agent <json>
"""

import argparse
from pathlib import Path

from alia import report
from alia.core.tracking import check_outputs, finish_stage

parser = argparse.ArgumentParser()
parser.add_argument("report_file", type=Path)
parser.add_argument("headline_file", type=Path)
parser.add_argument("--params", type=Path, required=True, help="the settings the header shows")
parser.add_argument("--corpus-stats", type=Path, required=True)
parser.add_argument("--corpora", type=Path, nargs="+", required=True)
parser.add_argument("--kg", type=Path, required=True, help="the graph's counts")
parser.add_argument("--kg-dir", type=Path, required=True, help="the graph itself: its degree distribution")
parser.add_argument("--teacher", type=Path, nargs="+", required=True, help="the teacher stages' metrics")
parser.add_argument("--student-curves", type=Path, required=True, help="one loss curve per adapter")
parser.add_argument("--embedder-curve", type=Path, required=True)
parser.add_argument("--mcqa", type=Path, required=True, help="one metrics file per evaluated model")
parser.add_argument("--embedder", type=Path, required=True)
parser.add_argument("--agent", type=Path, required=True)
args = parser.parse_args()
check_outputs(args.report_file, args.headline_file)

sections = [
    report.run_section(args.params),
    report.corpora_section(args.corpus_stats, args.corpora),
    report.teacher_section(args.teacher),
    report.kg_section(args.kg, args.kg_dir),
    report.training_section(sorted(args.student_curves.glob("*.json")), args.embedder_curve),
    report.mcqa_section(sorted(args.mcqa.glob("*.json"))),
    report.embedder_section(args.embedder),
    report.agent_section(args.agent),
]
report.write_report(sections, args.report_file)
print(f"wrote {args.report_file} ({args.report_file.stat().st_size / 1e6:.1f} MB)")
headline = report.headline(sorted(args.mcqa.glob("*.json")), args.embedder, args.agent)
finish_stage("report", headline, args.headline_file)
