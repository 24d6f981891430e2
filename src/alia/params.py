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
        raise KeyError(f"{path} has no '{section}' section; sections: {sorted(params)}")
    return params[section]
