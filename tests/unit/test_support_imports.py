"""The suites share helpers one way: `from tests.support.<module> import ...`. Nothing imports
a conftest module (pytest loads those itself) or a helper by a bare module name that only
resolves through pytest's rootdir insertion."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
    return modules


def test_helpers_come_from_tests_support_only() -> None:
    local = {p.stem for p in TESTS.rglob("*.py")} - {"__init__"}
    wrong = {}
    for path in TESTS.rglob("*.py"):
        for module in imported_modules(path):
            top = module.split(".")[0]
            if (
                module.split(".")[-1] == "conftest"
                or top in local
                or (top == "tests" and not module.startswith("tests.support"))
            ):
                wrong.setdefault(str(path.relative_to(TESTS)), []).append(module)
    assert not wrong, f"import these from tests.support instead: {wrong}"
