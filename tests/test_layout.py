"""The code's shape: no module over 400 lines, no function over 60 without a comment saying why."""

import ast

from conftest import REPO

SRC = REPO / "src" / "alia"


def test_no_module_over_400_lines():
    long = {
        p.relative_to(REPO).as_posix(): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long


def test_a_function_over_60_lines_says_why_above_it():
    """`# Long because ...` directly above its `def` (its decorators)."""
    unexplained = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.end_lineno - node.lineno >= 60
            ):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
                above = first - 1
                while above >= 0 and lines[above].startswith("#") and "Long because" not in lines[above]:
                    above -= 1
                if above < 0 or "# Long because" not in lines[above]:
                    unexplained.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert not unexplained
