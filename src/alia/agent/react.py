"""The maintenance agent: a ReAct loop (smolagents' ToolCallingAgent) over an LLM endpoint, with
the embedder's retrieval tools (alia.agent.tools); its evaluation is alia.agent.evaluation.

The agent's LLM is params.yaml `teacher:` with `agent.llm:` changes, and every one of its calls goes
through alia's one client (alia.llm.client: response cache, retries, token accounting): a re-run of the
same questions costs nothing. Tool calls are the endpoint's native ones (vLLM, OpenAI), or,
for a local llama.cpp model that has no tool-call format, one JSON action per step whose shape
({"thought", "name", "arguments"} for one of the tools) the endpoint is constrained to: even a 135M
model then always produces a well-formed call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from smolagents import ChatMessage, LogLevel, Model, Tool, ToolCallingAgent, tool
from smolagents.models import ChatMessageToolCall, ChatMessageToolCallFunction, MessageRole
from smolagents.monitoring import TokenUsage

from alia.agent.tools import BM25Tools, EmbedderTools, RetrievalTools
from alia.core.io import write_text
from alia.core.tracking import agent_span
from alia.llm.client import LOCAL, LLMClient
from alia.llm.prompts import PROMPTS_DIR

TOOL_CALLING = ("auto", "native", "json")


# --- the model: smolagents' interface over alia's LLM client --------------------------------------


# Lengths in characters: a constrained action that hits max_tokens is cut off mid-JSON, so the schema
# keeps every action well inside the agent's max_tokens (a small model otherwise rambles in "thought").
MAX_THOUGHT, MAX_NAME, MAX_ANSWER, MAX_CANDIDATES = 200, 100, 400, 10


def tool_call_schema(tools: list[Tool]) -> dict[str, Any]:
    """The JSON schema of one action: {"thought", "name", "arguments"}, one branch per tool, with
    the tool's own arguments (the optional ones may be left out), every string bounded."""

    def argument(name: str, spec: dict) -> dict:
        if spec["type"] == "array":
            items = {"type": "string", "maxLength": MAX_NAME}
            return {"type": "array", "items": items, "maxItems": MAX_CANDIDATES}
        if spec["type"] in ("integer", "number", "boolean"):
            return {"type": spec["type"]}
        return {"type": "string", "maxLength": MAX_ANSWER if name == "answer" else MAX_NAME}

    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "thought": {"type": "string", "maxLength": MAX_THOUGHT},
                    "name": {"const": t.name},
                    "arguments": {
                        "type": "object",
                        "properties": {name: argument(name, spec) for name, spec in t.inputs.items()},
                        "required": [name for name, spec in t.inputs.items() if not spec.get("nullable")],
                        "additionalProperties": False,
                    },
                },
                "required": ["thought", "name", "arguments"],
                "additionalProperties": False,
            }
            for t in tools
        ]
    }


class ClientModel(Model):
    """A smolagents model whose every call is a `LLMClient.chat` of alia's client (cache, retries, token
    accounting).

    tool_calling: "native" sends the tools (the endpoint returns tool calls), "json" constrains the
    answer to one JSON action (tool_call_schema), "auto" is "json" for the local llama.cpp server.
    """

    def __init__(self, llm: LLMClient, tool_calling: str = "auto") -> None:
        if tool_calling not in TOOL_CALLING:
            raise ValueError(f"tool_calling {tool_calling!r}: expected one of {TOOL_CALLING}")
        if tool_calling == "auto":
            tool_calling = "json" if llm.config.base_url == LOCAL else "native"
        # Plain-text messages, tool calls and results as assistant/user turns: any chat template takes them
        super().__init__(flatten_messages_as_text=True, model_id=llm.config.model)
        self.llm, self.tool_calling = llm, tool_calling

    def generate(
        self,
        messages: list[ChatMessage | dict],
        stop_sequences: list[str] | None = None,
        response_format: dict[str, str] | None = None,
        tools_to_call_from: list[Tool] | None = None,
        **kwargs: Any,
    ) -> ChatMessage:
        as_json = bool(tools_to_call_from) and self.tool_calling == "json"
        request = self._prepare_completion_kwargs(
            messages=messages,
            stop_sequences=stop_sequences,
            response_format=response_format,
            tools_to_call_from=None if as_json else tools_to_call_from,
            **kwargs,
        )
        chat = json.loads(json.dumps(request.pop("messages")))  # plain dicts: their JSON keys the cache
        if as_json:
            request["response_format"] = self.llm.config.response_format(
                tool_call_schema(tools_to_call_from), name="action"
            )
        answer = self.llm.chat(chat, **request)
        calls = [
            ChatMessageToolCall(
                id=c["id"],
                type="function",
                function=ChatMessageToolCallFunction(name=c["name"], arguments=c["arguments"]),
            )
            for c in answer.tool_calls
        ]
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            content=answer.text,
            tool_calls=calls or None,
            raw={"cache_key": answer.cache_key, "finish_reason": answer.finish_reason},
            token_usage=TokenUsage(input_tokens=answer.prompt_tokens, output_tokens=answer.completion_tokens),
        )

    def parse_tool_calls(self, message: ChatMessage) -> ChatMessage:
        """A JSON action's tool call, with an id derived from the answer instead of smolagents' random
        one: the id goes into the next prompts, so a random one would defeat the response cache."""
        message = super().parse_tool_calls(message)
        key = (message.raw or {}).get("cache_key", "")
        for i, call in enumerate(message.tool_calls):
            call.id = f"call_{key[:16]}_{i}"
        return message


# --- the agent ---------------------------------------------------------------------------------


PROMPT_FILE = PROMPTS_DIR / "agent.yaml"
REPEAT_NUDGE = (
    "(You already called {name} with these arguments: this is the same result. Call another tool with "
    "other arguments, or final_answer with the items you found.)"
)


class GuardedAgent(ToolCallingAgent):
    """A ToolCallingAgent whose identical repeated tool call does not spend the step budget on nothing:
    it gets the previous observation back with a nudge, and after `max_repeats` such repeats the loop
    ends and the agent is asked for its final answer, as at max_steps. (smolagents 1.26 offers
    step_callbacks, final_answer_checks and interrupt(), which raises out of run(): no repeat guard.)"""

    def __init__(self, *args: Any, max_repeats: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_repeats, self.repeats, self._seen = max_repeats, 0, {}

    def run(self, task: str, *args: Any, **kwargs: Any) -> Any:
        self.repeats, self._seen = 0, {}
        return super().run(task, *args, **kwargs)

    def execute_tool_call(self, tool_name: str, arguments: dict[str, Any] | str) -> Any:
        key = (tool_name, json.dumps(arguments, sort_keys=True, default=str))
        if tool_name == "final_answer" or key not in self._seen:
            result = super().execute_tool_call(tool_name, arguments)
            self._seen[key] = result
            return result
        self.repeats += 1
        if self.repeats > self.max_repeats:
            # smolagents increments step_number after the step and stops past max_steps, then asks
            # for the final answer without tools
            self.step_number = self.max_steps
        return f"{self._seen[key]}\n{REPEAT_NUDGE.format(name=tool_name)}"


def named_tool(function: Any) -> Tool:
    """smolagents' tool of `function`, an instance of a class named after it: MLflow names a tool's
    span by its class (`sensors_for_asset.__call__`, where every tool was `SimpleTool.__call__`)."""
    made = tool(function)
    made.__class__ = type(made.name, (type(made),), {})
    return made


def build_agent(
    tools: RetrievalTools,
    llm: LLMClient,
    max_steps: int,
    tool_calling: str = "auto",
    prompt_file: str | Path = PROMPT_FILE,
    max_repeats: int = 1,
) -> GuardedAgent:
    """A ToolCallingAgent with one tool per retrieval task, alia's system prompt (three unrelated
    examples), at most `max_steps` actions and `max_repeats` identical repeated calls (GuardedAgent);
    smolagents' own templates for everything else."""
    import importlib.resources

    templates = yaml.safe_load(
        importlib.resources.files("smolagents.prompts").joinpath("toolcalling_agent.yaml").read_text()
    )
    ours = yaml.safe_load(Path(prompt_file).read_text(encoding="utf-8"))
    templates["system_prompt"] = ours["system_prompt"]
    return GuardedAgent(
        tools=[named_tool(f) for f in tools.functions()],
        model=ClientModel(llm, tool_calling),
        prompt_templates=templates,
        max_steps=max_steps,
        verbosity_level=LogLevel.OFF,
        max_repeats=max_repeats,
    )


def tools_from_params(
    params: dict[str, Any], embedder: str | Path | None, tasks: str | Path, descriptions: str | Path
) -> RetrievalTools:
    """The tools of params.yaml `agent:` (k, min_score, augment) over the items of `tasks` (with the
    entities' `descriptions`): ranked by the `embedder`, or by BM25 where it is None."""
    settings = {"k": params["k"], "min_score": params["min_score"], "augment": params["augment"]}
    if embedder is None:
        return BM25Tools(tasks, descriptions, **settings)
    return EmbedderTools(embedder, tasks, descriptions, **settings)


def agent_from_params(
    params: dict[str, Any], tools: RetrievalTools, cache: str | Path
) -> tuple[GuardedAgent, LLMClient]:
    """The agent of params.yaml `agent:` over `tools`, its LLM (`teacher:` with `agent.llm:` changes)
    answering from and into `cache`. Close the returned client when done (it may run a local server)."""
    from alia.llm.teacher import stage_teacher

    llm = stage_teacher(params.get("llm"), cache)
    agent = build_agent(
        tools, llm, params["max_steps"], params["tool_calling"], max_repeats=params["max_repeats"]
    )
    return agent, llm


@dataclass
class AgentRun:
    """One question's outcome. `trace`: a record per step (thought, tool calls, observation, error)."""

    answer: str
    state: str  # "success": the agent called final_answer; "max_steps_error": it ran out of steps
    trace: list[dict[str, Any]] = field(default_factory=list)
    repeats: int = 0  # identical repeated tool calls (GuardedAgent)

    @property
    def tool_calls(self) -> int:
        """Retrieval-tool calls (final_answer is not one)."""
        return sum(c["name"] != "final_answer" for r in self.trace for c in r.get("tool_calls", []))

    @property
    def steps(self) -> int:
        return sum(r["type"] == "action" for r in self.trace)

    @property
    def errors(self) -> int:
        """Actions that failed (an unparsable action, a tool that raised), each reported back to the model."""
        return sum(r["type"] == "action" and bool(r["error"]) for r in self.trace)

    @property
    def parse_failures(self) -> int:
        """Actions whose tool call could not be read from the model's answer."""
        return sum(r["type"] == "action" and r.get("error_type") == "AgentParsingError" for r in self.trace)


def write_trace(path: str | Path, records: list[dict[str, Any]], append: bool = False) -> None:
    """Trace records as JSONL, one per line (values JSON cannot hold written as text): appended, or
    the whole file replaced at once."""
    lines = "".join(json.dumps(record, default=str) + "\n" for record in records)
    if not append:
        write_text(path, lines)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(lines)


def thought_of(model_output: str | None) -> str:
    """The step's reasoning: a JSON action's "thought", or the text before a native tool call."""
    text = (model_output or "").strip()
    try:
        action = json.loads(text)
        if isinstance(action, dict) and "thought" in action:
            return str(action["thought"])
    except json.JSONDecodeError:
        pass
    return text


def run_agent(agent: GuardedAgent, question: str) -> AgentRun:
    """Run the agent on one question; the trace comes from its memory, step by step."""
    from smolagents.memory import ActionStep
    from smolagents.utils import AgentMaxStepsError

    with agent_span(question) as span:
        result = agent.run(question, return_full_result=True)
        if span is not None:
            span.set_outputs({"answer": result.output, "state": result.state})
            if result.state != "success":  # smolagents' own span says OK whenever run() returns
                span.set_status("ERROR")
    trace: list[dict[str, Any]] = [{"type": "task", "question": question}]
    for step in agent.memory.steps:
        if not isinstance(step, ActionStep):
            continue
        usage = step.token_usage
        trace.append(
            {
                # out of steps: smolagents asks once more for an answer, without tools
                "type": "forced_answer" if isinstance(step.error, AgentMaxStepsError) else "action",
                "step": step.step_number,
                "thought": thought_of(step.model_output),
                "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in step.tool_calls or []],
                "observation": step.observations,
                "error": str(step.error) if step.error else None,
                "error_type": type(step.error).__name__ if step.error else None,
                "prompt_tokens": usage.input_tokens if usage else 0,
                "completion_tokens": usage.output_tokens if usage else 0,
                "seconds": round(step.timing.duration or 0.0, 2),
            }
        )
    output = result.output
    answer = output if isinstance(output, str) else json.dumps(output, default=str)
    trace.append({"type": "answer", "answer": answer, "state": result.state})
    return AgentRun(answer=answer, state=result.state, trace=trace, repeats=getattr(agent, "repeats", 0))
