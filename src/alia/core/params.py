"""params.yaml access for the stage scripts: one section per stage, each validated by its typed model."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from alia.core.precision import AUTO, DTYPES


class _ParamsLoader(yaml.SafeLoader):
    """YAML 1.1 reads `5e-5` (no dot) as a string; DVC (YAML 1.2) and users read it as a number, so
    `dvc exp run -S train_embedder.learning_rate=5e-5` must reach the stage as one."""


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_params(section: str, path: str | Path = "params.yaml") -> dict[str, Any]:
    """One stage's section of params.yaml (DVC runs stages from the repository root), validated by its
    model in SECTIONS: a bad setting stops the stage here, in one line."""
    params = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_ParamsLoader) or {}  # noqa: S506
    if section not in params:
        raise ValueError(f"{path}: no '{section}' section; sections: {sorted(params)}")
    validate(section, params[section], path)
    return params[section]


def overlay_args(path: str | Path, params_file: str | Path = "params.yaml") -> list[str]:
    """A params overlay (a YAML file shaped like params.yaml, holding only what it changes) as
    `dvc exp run` arguments: one `-S section.key=value` per leaf, the value in YAML flow style; a key
    params.yaml lacks (a new training variant) as `-S +section.key=value`, DVC's way to add one."""
    overlay = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_ParamsLoader) or {}  # noqa: S506
    if not isinstance(overlay, dict):
        raise ValueError(f"{path}: expected a mapping shaped like params.yaml")
    params = yaml.load(Path(params_file).read_text(encoding="utf-8"), Loader=_ParamsLoader) or {}  # noqa: S506

    def leaves(node: Any, prefix: str, known: Any) -> list[str]:
        if isinstance(node, dict) and node:
            return [
                arg
                for key, value in node.items()
                for arg in leaves(
                    value, f"{prefix}{key}.", known.get(key) if isinstance(known, dict) else None
                )
            ]
        value = yaml.safe_dump(node, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
        return ["-S", f"{'' if known is not None else '+'}{prefix[:-1]}={value}"]

    return leaves(overlay, "", params)


# --- typed settings: one pydantic model per section ----------------------------------------------
# A misspelt key, a wrong type or a value out of range stops a stage at once, before any model loads,
# with one line naming the setting and what is allowed. Sections that hand a library its own settings
# (TRL's SFTConfig, peft's LoraConfig, sentence-transformers' training arguments) are checked against
# that class's fields. The teacher's sections are alia.llm.client.ClientConfig.

# The allowed values live here, and the code that implements them reads them from here (a module
# that imports torch cannot be imported by every stage's settings check)
Dtype = Literal[(AUTO, *DTYPES)]  # alia.core.precision
Loss = Literal["contrastive", "mnrl", "cached_mnrl", "gist"]  # alia.embedder.training.LOSSES
Format = Literal["text", "chat"]  # alia.student.training.FORMATS
Mode = Literal["letter", "loglikelihood", "generative", "leaderboard"]  # alia.student.scoring.MODES
PositiveInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Split = Literal["train", "validation", "test"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _library_fields(module: str, name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A validator: every key of the mapping is a field of the library's settings class."""

    def check(value: dict[str, Any]) -> dict[str, Any]:
        import dataclasses
        import importlib

        cls = getattr(importlib.import_module(module), name)
        fields = {f.name for f in dataclasses.fields(cls)}
        for key in value:
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{key!r} is not a field of {module}.{name}{hint}")
        return value

    return check


SFTFields = Annotated[dict[str, Any], AfterValidator(_library_fields("trl", "SFTConfig"))]
LoraFields = Annotated[dict[str, Any], AfterValidator(_library_fields("peft", "LoraConfig"))]
TrainingFields = Annotated[
    dict[str, Any],
    AfterValidator(_library_fields("sentence_transformers", "SentenceTransformerTrainingArguments")),
]
# a stage's own teacher settings (say a shorter max_tokens), checked with the whole teacher section
TeacherOverrides = dict[str, Any]


class ModelRole(Section):
    kind: Literal["causal_lm", "sentence_transformer"]
    source: str
    hub_id: str | None = None  # the hub model a package source was made from (a hub source is its own)
    dtype: Dtype = "bfloat16"


class KG(Section):
    include_eval_assets: bool
    graphml: bool


class SensorDiscovery(Section):
    classes: PositiveInt
    max_sensors: PositiveInt
    teacher: TeacherOverrides = {}


class RelevanceCheck(Section):
    failure_modes_per_class: PositiveInt
    sensors_per_class: PositiveInt
    teacher: TeacherOverrides = {}


class CorpusFilters(Section):  # alia.kd.faithfulness.FILTERS; None: off
    min_fact_coverage: Fraction | None = None
    max_foreign_entities: Count | None = None
    max_contradictions: Count | None = None
    min_judge_faithfulness: Annotated[float, Field(ge=1, le=5)] | None = None


class Judge(Section):
    enabled: bool
    request: dict[str, Any] = {}  # request fields of the judge's prompts (max_tokens, temperature)


class KDBase(Section):
    failure_modes_per_class: PositiveInt
    sensors_per_class: PositiveInt
    facts_per_document: PositiveInt
    near_duplicate_threshold: Fraction
    filters: CorpusFilters = CorpusFilters()
    teacher: TeacherOverrides = {}


class KDRephrase(Section):
    styles: Annotated[list[str], Field(min_length=1)]
    documents: PositiveInt
    near_duplicate_threshold: Fraction
    filters: CorpusFilters = CorpusFilters()
    teacher: TeacherOverrides = {}


class Raft(Section):
    distractors: Count
    oracle_probability: Fraction
    seed: int


class KDQA(Section):
    documents: PositiveInt
    min_pairs: PositiveInt
    filters: CorpusFilters = CorpusFilters()
    raft: Raft
    teacher: TeacherOverrides = {}


class KDExtend(Section):
    documents: PositiveInt
    entities_per_class: Count
    pairs_per_class: Count
    near_duplicate_threshold: Fraction
    filters: CorpusFilters = CorpusFilters()
    teacher: TeacherOverrides = {}


class BuildEval(Section):
    min_options: Annotated[int, Field(ge=2)]
    max_options: Annotated[int, Field(ge=2)]
    multi_correct: PositiveInt
    seed: int
    expert_set: str


class Variant(Section):
    corpus: str
    student: str
    format: Format
    leak: bool = False  # a positive control: trained on D_eval itself (configs/controls.yaml)
    lora: LoraFields = {}
    sft: SFTFields = {}


class TrainStudent(Section):
    accelerate_config: str
    variants: dict[str, Variant]
    documents: Count
    replay_fraction: Annotated[float, Field(ge=0, lt=1)]
    dtype: Dtype
    lora: LoraFields
    sft: SFTFields


class QuestionSet(Section):
    sample: Count  # 0: the whole set
    modes: Annotated[list[Mode], Field(min_length=1)]
    perturbation: bool


class MCQA(Section):
    sets: dict[str, QuestionSet]
    prompt_style: Literal["auto", "chat", "kshot"]
    num_fewshot: Count
    max_new_tokens: PositiveInt
    leaderboard_max_new_tokens: PositiveInt
    batch_size: PositiveInt
    dtype: Dtype
    bootstrap_resamples: PositiveInt
    seed: int


class EvalPretrained(Section):
    models: Annotated[list[str], Field(min_length=1)]


class EvalTeacher(Section):
    sets: Annotated[list[str], Field(min_length=1)]  # of mcqa.sets: the students' samples
    modes: Annotated[list[Literal["letter", "generative", "leaderboard"]], Field(min_length=1)]
    top_logprobs: PositiveInt
    teacher: TeacherOverrides = {}


class DescriptionFilters(Section):  # alia.embedder.description_quality.FILTERS; None: off
    max_perplexity: Annotated[float, Field(gt=0)] | None = None
    min_groundedness: Fraction | None = None


class EmbedTasks(Section):
    split: Annotated[list[Fraction], Field(min_length=3, max_length=3)]
    seed: int
    augment_p: Fraction
    eval_augment_p: Fraction
    reference_model: str
    filters: DescriptionFilters = DescriptionFilters()
    teacher: TeacherOverrides = {}


class TrainEmbedder(Section):
    pretrained: str
    loss: Loss
    pos_ratio: Fraction
    negatives_per_query: PositiveInt
    margin: float
    negatives: Literal["random", "hard"]
    relative_margin: Fraction | None
    mini_batch_size: PositiveInt
    per_task_batches: bool
    seeds: Annotated[list[int], Field(min_length=1)]
    training: TrainingFields
    lora: LoraFields | None


class EvalEmbedder(Section):
    split: Split
    batch_size: PositiveInt


class Agent(Section):
    augment: bool
    k: PositiveInt
    min_score: float | None
    max_steps: PositiveInt
    max_repeats: Count
    tool_calling: Literal["auto", "native", "json"]
    llm: TeacherOverrides = {}


class EvalAgent(Section):
    split: Split
    max_per_kind: PositiveInt
    react_per_kind: PositiveInt | None
    closed_book_max_tokens: PositiveInt
    seed: int


SECTIONS: dict[str, Any] = {
    "prepare_models": dict[str, ModelRole],
    "kg": KG,
    "sensor_discovery": SensorDiscovery,
    "relevance_check": RelevanceCheck,
    "kd_base": KDBase,
    "kd_rephrase": KDRephrase,
    "kd_qa": KDQA,
    "kd_extend": KDExtend,
    "judge": Judge,
    "build_eval": BuildEval,
    "train_student": TrainStudent,
    "mcqa": MCQA,
    "eval_pretrained": EvalPretrained,
    "eval_teacher": EvalTeacher,
    "embed_tasks": EmbedTasks,
    "train_embedder": TrainEmbedder,
    "eval_embedder": EvalEmbedder,
    "agent": Agent,
    "eval_agent": EvalAgent,
}


def settings_error(error: ValidationError, where: str) -> ValueError:
    """A pydantic ValidationError as one line: each bad setting by its dotted name, what was wrong."""
    problems = []
    for e in error.errors():
        name = ".".join(str(part) for part in (where, *e["loc"]) if part)
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            message = "missing: every stage setting lives in params.yaml"
        elif e["type"] == "extra_forbidden":
            message = "not a setting of this section"
        elif "input" in e and not isinstance(e["input"], dict | list):
            message += f" (got {e['input']!r})"
        problems.append(f"{name}: {message}")
    return ValueError("; ".join(problems))


def validate(section: str, value: Any, path: str | Path = "params.yaml") -> None:
    """Raise a one-line ValueError unless `value` is a valid params.yaml `section`."""
    if section not in SECTIONS:
        return  # the teacher's sections are validated by alia.llm.client.ClientConfig where they are used
    try:
        TypeAdapter(SECTIONS[section]).validate_python(value)
    except ValidationError as error:
        raise settings_error(error, f"{path} {section}") from None
