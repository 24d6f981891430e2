"""The agent's evaluation (stage eval_agent): systems answer the same scenarios (alia.agent.scenarios)
and their answers' items are scored against the gold lists (alia.agent.scoring).

The systems, from the ceiling down:
- `oracle`: the right tool(s) called with the gold arguments, the answer the items they return: what
  the tools allow an agent that never errs (at the agent's `k`, `min_score` and `augment`);
- `oracle_pretrained` and `oracle_bm25`: the same policy over the embedder before fine-tuning and over
  BM25: what the fine-tuned embedder adds to the agent;
- `closed_book`: the agent's LLM asked the question alone, no tools;
- `react`: the ReAct agent (alia.agent.react) with the fine-tuned embedder's tools.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from alia.agent.react import AgentRun, GuardedAgent, run_agent
from alia.agent.scoring import ItemMatcher, item_scores, paired_f1, summary
from alia.agent.tools import RetrievalTools
from alia.llm.client import LLMClient, LLMError
from alia.llm.prompts import Prompt

COUNTS = ("tool_calls", "repeated_calls", "parse_failures", "steps")  # per question: means
FLAGS = ("no_answer", "stopped")  # per question: totals


def oracle_items(tools: RetrievalTools, kind: str, arguments: dict[str, str]) -> tuple[list[str], int]:
    """The items the right tool calls return for a scenario of `kind`, and how many calls it took."""

    def items(found: list[dict]) -> list[str]:
        return [f["item"] for f in found]

    a = arguments
    if kind == "fm2s":
        return items(tools.sensors_for_failure_mode(a["asset"], a["failure_mode"])), 1
    if kind == "s2fm":
        return items(tools.failure_modes_for_sensor(a["asset"], a["sensor"])), 1
    if kind == "a2s":
        return items(tools.sensors_for_asset(a["asset"])), 1
    if kind == "fm2cmp":
        return items(tools.components_for_failure_mode(a["asset"], a["failure_mode"])), 1
    if kind == "sensors_fm":  # the failure modes both sensors' calls return
        first = items(tools.failure_modes_for_sensor(a["asset"], a["sensor"]))
        second = set(items(tools.failure_modes_for_sensor(a["asset"], a["sensor_2"])))
        return [fm for fm in first if fm in second], 2
    if kind == "symptom":  # the failure modes the sensor reveals, then each one's components
        failure_modes = items(tools.failure_modes_for_sensor(a["asset"], a["sensor"]))
        found = [items(tools.components_for_failure_mode(a["asset"], fm)) for fm in failure_modes]
        return list(dict.fromkeys(c for cs in found for c in cs)), 1 + len(failure_modes)
    if kind == "confirm":
        sensors = items(tools.sensors_for_failure_mode(a["asset"], a["failure_mode"]))
        components = items(tools.components_for_failure_mode(a["asset"], a["failure_mode"]))
        return list(dict.fromkeys(sensors + components)), 2
    raise ValueError(f"scenario kind {kind!r}: the oracle knows {sorted(ORACLE_KINDS)}")


ORACLE_KINDS = ("fm2s", "s2fm", "a2s", "fm2cmp", "sensors_fm", "symptom", "confirm")


def run_oracle(tools: RetrievalTools, scenarios: pd.DataFrame) -> pd.DataFrame:
    """The oracle policy's answer to every scenario that has gold arguments."""
    rows = []
    for s in scenarios[scenarios["kind"].isin(ORACLE_KINDS)].itertuples():
        started = time.monotonic()
        items, calls = oracle_items(tools, s.kind, s.arguments)
        rows.append(
            {"id": s.id, "answer": ", ".join(items), "items": items, "tool_calls": calls, "steps": calls,
             "seconds": time.monotonic() - started}
        )  # fmt: skip
    return pd.DataFrame(rows)


def run_closed_book(llm: LLMClient, prompt: Prompt, scenarios: pd.DataFrame, max_tokens: int) -> pd.DataFrame:
    """The LLM's answer to each question, no tools (one prompt each, through the client's cache)."""
    started = time.monotonic()
    answers = llm.ask(
        [prompt.messages(question=text) for text in scenarios["text"]],
        desc="closed book",
        request={"max_tokens": max_tokens},
    )
    seconds = (time.monotonic() - started) / max(len(scenarios), 1)
    return pd.DataFrame(
        {"id": scenarios["id"], "answer": [a.text for a in answers], "steps": 1, "seconds": seconds}
    )


def run_react(
    agent: GuardedAgent, scenarios: pd.DataFrame, progress: bool = True
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The agent's answer to each question, with its counts, and the trace records (tagged with the
    scenario id). A run that raises is a result (no answer), unless the endpoint failed (LLMError):
    that stops the evaluation, and a re-run resumes from the cache."""
    rows, trace = [], []
    for s in tqdm(scenarios.itertuples(), total=len(scenarios), desc="react", disable=not progress):
        started = time.monotonic()
        try:
            run = run_agent(agent, s.text)
        except Exception as error:  # noqa: BLE001 (a failed run is a result: kept, counted)
            if isinstance(error, LLMError) or isinstance(error.__cause__, LLMError):
                raise
            state = f"error: {type(error).__name__}: {error}"
            records = [{"type": "task", "question": s.text}, {"type": "answer", "answer": "", "state": state}]
            run = AgentRun(answer="", state=state, trace=records)
        trace += [{"id": s.id, **record} for record in run.trace]
        rows.append(
            {
                "id": s.id,
                "answer": run.answer,
                "state": run.state,
                "tool_calls": run.tool_calls,
                "repeated_calls": run.repeats,
                "parse_failures": run.parse_failures,
                "steps": run.steps,
                "stopped": run.state != "success",
                "seconds": time.monotonic() - started,
            }
        )
    return pd.DataFrame(rows), trace


def score(system: str, answers: pd.DataFrame, scenarios: pd.DataFrame, matcher: ItemMatcher) -> pd.DataFrame:
    """One row per answered scenario: the system's answer, the items it names (a list the system
    returned, else those its text names), their scores against the gold list, and the counts."""
    rows = scenarios[["id", "kind", "cluster", "answer"]].rename(columns={"answer": "gold"})
    out = rows.merge(answers, on="id", how="inner")
    if "items" not in out:
        out["items"] = [matcher.named(text) for text in out["answer"]]
    out["items"] = [matcher.canonical(items) for items in out["items"]]
    out["gold"] = [matcher.canonical(gold) for gold in out["gold"]]
    scores = pd.DataFrame([item_scores(p, g) for p, g in zip(out["items"], out["gold"], strict=True)])
    out = pd.concat([out.reset_index(drop=True), scores], axis=1)
    for column in COUNTS:
        out[column] = out[column].fillna(0).astype(int) if column in out else 0
    out["no_answer"] = out["items"].map(len) == 0
    out["stopped"] = out["stopped"].fillna(False).astype(bool) if "stopped" in out else False
    out["state"] = out["state"].fillna("") if "state" in out else ""
    out.insert(0, "system", system)
    return out


def system_metrics(scored: pd.DataFrame) -> dict[str, Any]:
    """A system's scores (overall and per kind, with intervals) and its counts."""
    counts = {c: round(float(scored[c].mean()), 3) for c in COUNTS}
    counts |= {f: int(scored[f].sum()) for f in FLAGS}
    return summary(scored) | {"counts": counts}


# The comparisons the metrics report: (variant, base), each on the questions both answered
COMPARISONS = [
    ("oracle", "oracle_pretrained"),  # what fine-tuning the embedder adds
    ("oracle", "oracle_bm25"),  # what the embedder adds over word overlap
    ("react", "closed_book"),  # what the tools add to the LLM
    ("oracle", "react"),  # how far the agent is from the tools' ceiling
]


def evaluation_metrics(scored: pd.DataFrame) -> dict[str, Any]:
    """Every system's metrics and the paired comparisons of COMPARISONS."""
    systems = {name: group for name, group in scored.groupby("system", sort=False)}
    return {
        "systems": {name: system_metrics(group) for name, group in systems.items()},
        "comparisons": {
            f"{variant} - {base}": paired_f1(systems[variant], systems[base])
            for variant, base in COMPARISONS
            if variant in systems and base in systems
        },
    }


def subset(scenarios: pd.DataFrame, per_kind: int | None, seed: int) -> pd.DataFrame:
    """At most `per_kind` scenarios of each kind, drawn with `seed` (all where None)."""
    if per_kind is None:
        return scenarios
    rng = np.random.default_rng(seed)
    keep = [
        i
        for _, group in scenarios.groupby("kind", sort=False)
        for i in sorted(rng.choice(group.index, min(per_kind, len(group)), replace=False))
    ]
    return scenarios.loc[sorted(keep)]


def evaluate_systems(
    scenarios: pd.DataFrame,
    oracles: dict[str, RetrievalTools],
    llm: LLMClient,
    closed_book: Prompt,
    max_tokens: int,
    agent: GuardedAgent,
    react_scenarios: pd.DataFrame,
    matcher: ItemMatcher,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Every system's scored answers (one row per system and scenario) and the agent's trace: the oracle
    policy over each of `oracles` (name suffix -> tools), the LLM alone on every scenario, the ReAct
    agent on `react_scenarios`."""
    answers = {f"oracle{suffix}": run_oracle(tools, scenarios) for suffix, tools in oracles.items()}
    answers["closed_book"] = run_closed_book(llm, closed_book, scenarios, max_tokens)
    answers["react"], trace = run_react(agent, react_scenarios)
    answered = {name: a for name, a in answers.items() if not a.empty}  # an oracle without gold arguments
    return pd.concat([score(name, a, scenarios, matcher) for name, a in answered.items()]), trace
