"""params.yaml access for the stage scripts: one section per stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_params(section: str, path: str | Path = "params.yaml") -> dict[str, Any]:
    """One stage's section of params.yaml (DVC runs stages from the repository root)."""
    params = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if section not in params:
        raise KeyError(f"{path} has no '{section}' section; sections: {sorted(params)}")
    return params[section]
