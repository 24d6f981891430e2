"""dvc.yaml's dependencies are the code each stage runs, so that `dvc repro` never calls stale
outputs up to date: a stage's src/alia dependencies are exactly the import closure of its script,
and every prompt its script loads by name is a dependency too."""

import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO

SRC = Path("src")


def _is_alia(module: str | None) -> bool:
    return (module or "").split(".")[0] == "alia"


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:`: imports for annotations, never run."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for stmt in node.body
        for inner in ast.walk(stmt)
    }


def _imported_modules(path: Path) -> set[str]:
    """The alia modules a file imports when it runs (function-level imports included)."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if _is_alia(a.name)}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_alia(node.module):
            found.add(node.module)
            # `from alia import teacher` imports a module, not a name
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _module_file(module: str, root: Path) -> Path | None:
    base = root / SRC / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def import_closure(script: Path, root: Path = REPO) -> set[str]:
    """Repository-relative paths of the src/alia modules `script` imports, directly or not.

    The package's __init__.py holds the version string only, so it is no stage's dependency.
    """
    seen: set[str] = set()
    todo = [script]
    while todo:
        for module in _imported_modules(todo.pop()):
            path = _module_file(module, root)
            if path is None or path.name == "__init__.py":
                continue
            relative = path.relative_to(root).as_posix()
            if relative not in seen:
                seen.add(relative)
                todo.append(path)
    return seen


def loaded_prompts(script: Path) -> set[str]:
    """prompts/<name>.yaml for each load_prompt("<name>") with a literal name in the script."""
    names = set()
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "load_prompt"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(f"prompts/{node.args[0].value}.yaml")
    return names


def stages(dvc_yaml: dict) -> dict[str, dict]:
    """Each stage's definition (a foreach stage's `do` template)."""
    return {name: spec.get("do", spec) for name, spec in dvc_yaml["stages"].items()}


def dependency_problems(dvc_yaml: dict, root: Path = REPO) -> list[str]:
    """One line per stage whose dependencies are not its script's code."""
    problems = []
    for name, stage in stages(dvc_yaml).items():
        scripts = re.findall(r"stages/\w+\.py", stage["cmd"])
        if scripts != [f"stages/{name}.py"]:
            problems.append(f"{name}: its command should run stages/{name}.py, runs {scripts}")
            continue
        script = root / scripts[0]
        deps = [str(d) for d in stage.get("deps", [])]
        listed = {d for d in deps if d.startswith("src/alia/")}
        closure = import_closure(script, root)
        if missing := sorted(closure - listed):
            problems.append(f"{name}: imports {missing} but does not depend on them")
        if extra := sorted(listed - closure):
            problems.append(f"{name}: depends on {extra}, which it never imports")
        if scripts[0] not in deps:
            problems.append(f"{name}: its script {scripts[0]} is not a dependency")
        if missing_prompts := sorted(loaded_prompts(script) - set(deps)):
            problems.append(f"{name}: loads {missing_prompts} but does not depend on them")
    return problems


DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("stage", sorted(stages(DVC_YAML)))
def test_stage_depends_on_the_code_it_runs(stage):
    problems = [p for p in dependency_problems(DVC_YAML) if p.startswith(f"{stage}:")]
    assert problems == []


def test_a_removed_dependency_is_caught():
    edited = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    edited["stages"]["kd_base"]["deps"].remove("src/alia/data/vocabulary.py")
    edited["stages"]["kd_base"]["deps"].remove("prompts/kd_base.yaml")
    assert dependency_problems(edited) == [
        "kd_base: imports ['src/alia/data/vocabulary.py'] but does not depend on them",
        "kd_base: loads ['prompts/kd_base.yaml'] but does not depend on them",
    ]


def test_closure_follows_function_level_imports(tmp_path):
    (tmp_path / "src" / "alia").mkdir(parents=True)
    (tmp_path / "src" / "alia" / "a.py").write_text("def f():\n    from alia import b\n")
    (tmp_path / "src" / "alia" / "b.py").write_text("import alia.c\n")
    (tmp_path / "src" / "alia" / "c.py").write_text("x = 1\n")
    (tmp_path / "stage.py").write_text("from alia.a import f\n")
    assert import_closure(tmp_path / "stage.py", tmp_path) == {
        "src/alia/a.py",
        "src/alia/b.py",
        "src/alia/c.py",
    }


def test_params_hold_no_output_path():
    """Every path has one home, the stage's command line: params.yaml names no output or cache."""

    def leaves(node):
        if isinstance(node, dict):
            return [v for value in node.values() for v in leaves(value)]
        if isinstance(node, list):
            return [v for value in node for v in leaves(value)]
        return [node]

    outs = [
        re.sub(r"\$\{[^}]*\}.*", "", str(next(iter(o)) if isinstance(o, dict) else o))
        for stage in stages(DVC_YAML).values()
        for key in ("outs", "metrics", "plots")
        for o in stage.get(key, [])
    ]
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    paths = [v for v in leaves(params) if isinstance(v, str) and "/" in v and not v.startswith("package:")]
    assert paths and not [p for p in paths if any(p.startswith(o) for o in outs)]
    assert not [v for v in leaves(params) if isinstance(v, str) and v.endswith(".sqlite")]


# src/alia's packages, each importing only those before it; the faces (cli, report, cards) may import any
LAYERS = ["core", "llm", "data", "kd", "student", "embedder", "agent"]


def test_packages_import_only_the_packages_before_them():
    root = REPO / SRC / "alia"
    assert sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == sorted(
        LAYERS
    )
    upward = []
    for rank, package in enumerate(LAYERS):
        for path in sorted((root / package).glob("*.py")):
            for module in _imported_modules(path):
                imported = module.split(".")[1] if module.count(".") else package
                if imported in LAYERS and LAYERS.index(imported) > rank:
                    upward.append(f"{path.relative_to(REPO)} imports {module}")
    assert not upward


def test_every_stage_gets_its_one_line_errors_from_tracking():
    """One way for a stage to print a known failure as one line: alia.core.tracking, which every stage
    imports (it installs alia.core.errors' hook), never a stage's own call."""
    for script in sorted((REPO / "stages").glob("*.py")):
        source = script.read_text(encoding="utf-8")
        assert "alia.core.tracking" in _imported_modules(script), script.name
        assert "errors.install" not in source, script.name
