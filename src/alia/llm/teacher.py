"""The teacher role: a stage's LLM client, configured by params.yaml `teacher:` with the stage's own
`teacher:` changes, answering from and into the stage's response cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from alia.core.params import load_params, settings_error
from alia.llm.client import ClientConfig, LLMClient

SERVER_LOG = "logs/teacher_server.log"


def teacher_config(
    overrides: dict[str, Any] | None = None, params_file: str | Path = "params.yaml"
) -> ClientConfig:
    """params.yaml `teacher:` with `overrides` (a stage's own `teacher:` keys, say a shorter max_tokens;
    a `local` mapping changes single settings of the local server)."""
    base, overrides = load_params("teacher", params_file), overrides or {}
    config = base | overrides
    if "local" in overrides:
        config["local"] = base.get("local", {}) | overrides["local"]
    try:
        return ClientConfig(**config)
    except ValidationError as error:  # one line naming the setting, before any server starts
        where = f"{params_file} teacher" + (
            f" (with the stage's teacher: {sorted(overrides)})" if overrides else ""
        )
        raise settings_error(error, where) from None


def stage_teacher(overrides: dict[str, Any] | None, cache: str | Path) -> LLMClient:
    """The teacher of a stage, answering from and into its response cache `cache`."""
    return LLMClient(teacher_config(overrides), cache, server_log=SERVER_LOG)
