"""Every code path the docs, README, params.yaml and the scripts name exists: a `src/alia/...` path is
a file or folder, and an `alia.<module>[.<name>]` is a module (and a name in it)."""

import importlib
import re
import types

import pytest
from conftest import REPO

FILES = sorted(
    [REPO / "README.md", REPO / "params.yaml", REPO / "dvc.yaml", REPO / "Makefile"]
    + list((REPO / "docs").glob("*.md"))
    + list((REPO / "configs").rglob("*.yaml"))
    + list((REPO / "benchmarks").glob("*.py"))
    + list((REPO / "stages").glob("*.py"))
)
TAGS = {"alia.stage", "alia.variant", "alia.git_dirty"}  # MLflow tag names, not code
PATH = re.compile(r"src/alia/[\w/]*\w(?:\.py)?")
NAME = re.compile(r"(?<![\w./])alia(?:\.\w+)+\*?")


def resolves(dotted: str) -> bool:
    """`dotted` is a module, or names in a module (alia.x.y.NAME; a trailing * names a prefix)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 1, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        module = obj.__name__
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
            if isinstance(obj, type | types.FunctionType) and obj.__module__ != module:
                return False  # imported there, defined elsewhere: name its home
            module = getattr(obj, "__module__", module)
        return True
    return False


def mentions(pattern: re.Pattern) -> list[tuple[str, str]]:
    found = []
    for path in FILES:
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            found.append((path.relative_to(REPO).as_posix(), match.group(0).rstrip(".")))
    return sorted(set(found))


@pytest.mark.parametrize("where, path", mentions(PATH))
def test_a_named_source_path_exists(where, path):
    assert (REPO / path).exists(), f"{where} names {path}"


def test_every_named_module_and_name_exists():
    missing = []
    for where, name in mentions(NAME):
        if name in TAGS:
            continue
        prefix = name.removesuffix("*")
        if name.endswith("*"):  # alia.agent.react.MAX_*: some name with that prefix
            module, _, start = prefix.rpartition(".")
            ok = resolves(module) and any(n.startswith(start) for n in dir(importlib.import_module(module)))
        else:
            ok = resolves(prefix)
        if not ok:
            missing.append(f"{where}: {name}")
    assert not missing
