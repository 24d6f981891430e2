"""The agent's evaluation: multi-step questions about test-split assets, each with gold items (the
relevant items of two embedder tasks), and the answer's recall and precision of them.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
from smolagents import ToolCallingAgent

from alia.agent.react import AgentRun, run_agent
from alia.llm.client import LLMError

QUESTION_KINDS = {
    # kind: (the question, the tasks whose relevant items are its gold answer)
    "symptom": (
        "Sensor readings show abnormal {subject} on a {asset}. Which failure modes may be developing, "
        "and which components may be failing?",
        ("S2FM", "FM2CMP"),
    ),
    "confirm": (
        "A {asset} may be developing {subject}. Which sensors would confirm it, and which components "
        "are involved?",
        ("FM2S", "FM2CMP"),
    ),
}


def agent_questions(tasks: pd.DataFrame, split: str, per_kind: int, seed: int) -> pd.DataFrame:
    """`per_kind` questions of each kind about the assets of `split`, with their gold items: the
    relevant items of the embedder's queries (ISO 17359 ticks, as in the KG, and the taxonomy seed's
    components). A "symptom" question (asset, sensor) needs S2FM, then FM2CMP for each failure mode
    found; a "confirm" question (asset, failure mode) needs FM2S and FM2CMP."""
    rows = tasks[(tasks["split"] == split) & (tasks["asset"] != "")]
    relevant = {
        (t, a, tuple(e)): list(r)
        for t, a, e, r in zip(rows["task"], rows["asset"], rows["entities"], rows["relevant"], strict=True)
    }

    def components(asset: str, failure_modes: list[str]) -> list[str]:
        return sorted({c for fm in failure_modes for c in relevant.get(("FM2CMP", asset, (asset, fm)), [])})

    rng = np.random.default_rng(seed)
    questions = []
    for kind, (template, _) in QUESTION_KINDS.items():
        first_task = "S2FM" if kind == "symptom" else "FM2S"
        keys = sorted(k for k in relevant if k[0] == first_task)
        for i in sorted(rng.choice(len(keys), min(per_kind, len(keys)), replace=False)):
            _, asset, (_, subject) = keys[i]
            found = sorted(relevant[keys[i]])
            failure_modes = found if kind == "symptom" else [subject]
            gold = {
                "gold_failure_modes": found if kind == "symptom" else [],
                "gold_sensors": found if kind == "confirm" else [],
                "gold_components": components(asset, failure_modes),
            }
            questions.append(
                {
                    "kind": kind,
                    "asset": asset,
                    "subject": subject,
                    "question": template.format(asset=asset, subject=subject),
                    **gold,
                    "gold": sorted({g for items in gold.values() for g in items}),
                }
            )
    out = pd.DataFrame(questions)
    out.insert(0, "question_id", [f"agent-{i:03d}" for i in range(len(out))])
    return out


def mentioned_items(answer: str, vocabulary: list[str]) -> list[str]:
    """The items of `vocabulary` named in `answer` (case-insensitive, whole words). The longest name
    wins: "bearing damage" names that failure mode, not also the component "bearing"."""
    text, named = answer.casefold(), []
    for item in sorted(vocabulary, key=len, reverse=True):
        text, found = re.subn(rf"(?<!\w){re.escape(item.casefold())}(?!\w)", "\0", text)
        if found:
            named.append(item)
    return sorted(named)


def answer_scores(answer: str, gold: list[str], vocabulary: list[str]) -> dict[str, float]:
    """Recall and precision of the gold items among the vocabulary items the answer names."""
    named = set(mentioned_items(answer, vocabulary))
    hits = len(named & set(gold))
    return {
        "recall": hits / len(gold) if gold else 0.0,
        "precision": hits / len(named) if named else 0.0,
        "named": len(named),
    }


def item_vocabulary(tasks: pd.DataFrame) -> list[str]:
    """Every sensor, failure mode and component the tools can return."""
    tool_tasks = tasks[tasks["task"].isin(["FM2S", "S2FM", "FM2CMP"])]
    return sorted({c for cs in tool_tasks["candidates"] for c in cs})


def evaluate_agent(
    agent: ToolCallingAgent, questions: pd.DataFrame, vocabulary: list[str], progress: bool = True
) -> tuple[pd.DataFrame, list[dict]]:
    """Each question through the agent: per-question answers and scores, and the trace records
    (tagged with their question_id). A question whose run raises is counted as failed, unless the
    endpoint failed (LLMError): that stops the evaluation, and a re-run resumes from the cache."""
    from tqdm.auto import tqdm

    answers, trace = [], []
    for q in tqdm(questions.itertuples(), total=len(questions), desc="agent", disable=not progress):
        started = time.monotonic()
        try:
            run = run_agent(agent, q.question)
        except Exception as error:  # noqa: BLE001 (a failed run is a result: kept, counted)
            if isinstance(error, LLMError) or isinstance(error.__cause__, LLMError):
                raise
            run = AgentRun(answer="", state=f"error: {type(error).__name__}: {error}")
            run.trace = [
                {"type": "task", "question": q.question},
                {"type": "answer", "answer": "", "state": run.state},
            ]
        trace += [{"question_id": q.question_id, **record} for record in run.trace]
        answers.append(
            {
                "question_id": q.question_id,
                "answer": run.answer,
                "state": run.state,
                "steps": run.steps,
                "tool_calls": run.tool_calls,
                "step_errors": run.errors,
                "seconds": round(time.monotonic() - started, 2),
                **answer_scores(run.answer, list(q.gold), vocabulary),
            }
        )
    return pd.DataFrame(answers), trace


def summary_metrics(answers: pd.DataFrame) -> dict[str, float]:
    """Means over the questions; `failures`: runs that did not end with final_answer."""
    return {
        "questions": len(answers),
        "recall": round(float(answers["recall"].mean()), 4),
        "precision": round(float(answers["precision"].mean()), 4),
        "tool_calls": round(float(answers["tool_calls"].mean()), 3),
        "steps": round(float(answers["steps"].mean()), 3),
        "step_errors": int(answers["step_errors"].sum()),
        "failures": int((answers["state"] != "success").sum()),
    }
