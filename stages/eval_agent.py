"""Stage eval_agent: the maintenance agent on multi-step questions about unseen assets; recall and
precision of the gold items its answers name, tool calls, steps and failures; every step's trace.

python stages/eval_agent.py <tasks.parquet> <out_dir> <metrics.json>
"""

import json
import sys
from pathlib import Path

import mlflow
import pandas as pd

from alia.agent import (
    agent_from_params,
    agent_questions,
    evaluate_agent,
    item_vocabulary,
    summary_metrics,
    write_trace,
)
from alia.params import load_params
from alia.tracking import start_run

tasks_file, out_dir, metrics_file = map(Path, sys.argv[1:4])
params, agent_params = load_params("eval_agent"), load_params("agent")
tasks = pd.read_parquet(tasks_file)

questions = agent_questions(tasks, params["split"], params["questions_per_kind"], params["seed"])
agent, teacher = agent_from_params(agent_params, params["cache"])
with teacher:
    answers, trace = evaluate_agent(agent, questions, item_vocabulary(tasks))

out_dir.mkdir(parents=True, exist_ok=True)
questions.to_parquet(out_dir / "questions.parquet", index=False)
answers.to_parquet(out_dir / "answers.parquet", index=False)
write_trace(out_dir / "trace.jsonl", trace)

metrics = {**summary_metrics(answers), "teacher": teacher.metrics()}
metrics_file.parent.mkdir(parents=True, exist_ok=True)
metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")
with start_run("eval_agent", {"eval_agent": params, "agent": agent_params}):
    mlflow.log_metrics({k: v for k, v in metrics.items() if not isinstance(v, dict)})
    mlflow.log_metrics({f"teacher.{k}": v for k, v in metrics["teacher"].items()})
    mlflow.log_artifact(str(out_dir / "trace.jsonl"))
print(json.dumps(metrics))
