"""Stage eval_agent: the maintenance agent on multi-step questions about unseen assets; recall and
precision of the gold items its answers name, tool calls, steps and failures; every step's trace, as
JSONL and in MLflow's Traces view.

python stages/eval_agent.py <embedder_dir> <tasks.parquet> <descriptions.parquet> <out_dir> <cache.sqlite>
    <metrics.json>
"""

import sys
from pathlib import Path

from alia.agent.evaluation import agent_questions, evaluate_agent, item_vocabulary, summary_metrics
from alia.agent.react import agent_from_params, write_trace
from alia.core.io import read_parquet, write_parquet
from alia.core.params import load_params
from alia.core.tracking import check_outputs, finish_stage, start_run, trace_agent

embedder_dir, tasks_file, descriptions_file, out_dir, cache, metrics_file = map(Path, sys.argv[1:7])
check_outputs(out_dir, cache, metrics_file)  # an unwritable folder stops it now
params, agent_params = load_params("eval_agent"), load_params("agent")
tasks = read_parquet(tasks_file)

questions = agent_questions(tasks, params["split"], params["questions_per_kind"], params["seed"])
agent, llm = agent_from_params(agent_params, embedder_dir, tasks_file, descriptions_file, cache)
# the run is open while the agent works, so that its traces belong to it
with start_run("eval_agent", {"eval_agent": params, "agent": agent_params}):
    trace_agent()
    with llm:
        answers, trace = evaluate_agent(agent, questions, item_vocabulary(tasks))

    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(questions, out_dir / "questions.parquet")
    write_parquet(answers, out_dir / "answers.parquet")
    write_trace(out_dir / "trace.jsonl", trace)
    finish_stage(
        "eval_agent",
        {**summary_metrics(answers), "llm": llm.metrics()},
        metrics_file,
        artifacts=[out_dir / "trace.jsonl"],
        run_stats={
            "seconds_per_question": round(float(answers["seconds"].mean()), 2),
            "llm": llm.run_stats(),
        },
        inputs={tasks_file: "evaluation"},
    )
