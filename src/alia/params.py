"""params.yaml access for the stage scripts: one section per stage."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


class _ParamsLoader(yaml.SafeLoader):
    """YAML 1.1 reads `5e-5` (no dot) as a string; DVC (YAML 1.2) and users read it as a number, so
    `dvc exp run -S train_embedder.learning_rate=5e-5` must reach the stage as one."""


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_params(section: str, path: str | Path = "params.yaml") -> dict[str, Any]:
    """One stage's section of params.yaml (DVC runs stages from the repository root)."""
    params = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_ParamsLoader) or {}  # noqa: S506
    if section not in params:
        raise ValueError(f"{path}: no '{section}' section; sections: {sorted(params)}")
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
