"""Stage eval_agent: open questions about the assets the embedder never saw (AssetOpsBench's scenario
schema, gold item lists from the tables), answered by the oracle tool policy over the fine-tuned
embedder, the pretrained one and BM25, by the LLM alone and by the ReAct agent; entity precision,
recall and F1 with intervals, per kind, paired comparisons, and the agent's counts and traces (JSONL
and MLflow's Traces view).

python stages/eval_agent.py <embedder_dir> <pretrained_dir> <tasks.parquet> <descriptions.parquet>
    <vocabulary.parquet> <vocabulary_rules.yaml> <out_dir> <cache.sqlite> <metrics.json>
"""

import sys
from pathlib import Path

from alia.agent import evaluation
from alia.agent.react import agent_from_params, tools_from_params, write_trace
from alia.agent.scenarios import build_scenarios, write_scenarios
from alia.agent.scoring import ItemMatcher
from alia.core.io import read_parquet, write_parquet
from alia.core.params import load_params
from alia.core.tracking import check_outputs, finish_stage, start_run, trace_agent
from alia.llm.prompts import load_prompt

embedder, pretrained, tasks_file, descriptions, vocabulary, rules, out_dir, cache, metrics_file = map(
    Path, sys.argv[1:10]
)
check_outputs(out_dir, cache, metrics_file)  # an unwritable folder stops it now
params, agent_params = load_params("eval_agent"), load_params("agent")

# 1. The questions, and the matcher that reads the items an answer names
scenarios = build_scenarios(read_parquet(tasks_file), params["split"], params["max_per_kind"], params["seed"])
matcher = ItemMatcher.from_files(tasks_file, vocabulary, rules)

# 2. The systems: the oracle policy over three rankers (the tools' ceiling, and what the embedder adds
# to it), the LLM alone, the ReAct agent (on a subset: ~15 s a question here). The run is open while
# the agent works, so that its traces belong to it
oracles = {suffix: tools_from_params(agent_params, model, tasks_file, descriptions)
           for suffix, model in [("", embedder), ("_pretrained", pretrained), ("_bm25", None)]}  # fmt: skip
react_scenarios = evaluation.subset(scenarios, params["react_per_kind"], params["seed"])
with start_run("eval_agent", {"eval_agent": params, "agent": agent_params}):
    trace_agent()
    agent, llm = agent_from_params(agent_params, oracles[""], cache)
    with llm:
        scored, trace = evaluation.evaluate_systems(
            scenarios, oracles, llm, load_prompt("agent_closed_book"), params["closed_book_max_tokens"],
            agent, react_scenarios, matcher,
        )  # fmt: skip

    # 3. Scores, paired comparisons, and everything each system answered
    write_scenarios(scenarios, out_dir / "scenarios.jsonl")
    write_parquet(scored, out_dir / "answers.parquet")
    write_trace(out_dir / "trace.jsonl", trace)
    finish_stage(
        "eval_agent",
        {
            "split": params["split"],
            "questions": len(scenarios),
            "react_questions": len(react_scenarios),
            **evaluation.evaluation_metrics(scored),
            "llm": llm.metrics(),
        },
        metrics_file,
        artifacts=[out_dir / "trace.jsonl", out_dir / "scenarios.jsonl"],
        run_stats={
            "seconds_per_question": scored.groupby("system")["seconds"].mean().round(3).to_dict(),
            "llm": llm.run_stats(),
        },
        inputs={tasks_file: "evaluation"},
    )
