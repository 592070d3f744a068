"""The package's size rules (STYLE.md, issue 34): no module over 400 lines, no class over 300, no function over 80;
training code imports at module level (a function-local import there hid the import cycle of train/)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fashiongen"
MAX_MODULE, MAX_CLASS, MAX_FUNCTION = 400, 300, 80


def spans(kinds: tuple[type, ...], limit: int) -> list[str]:
    over = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, kinds) and (length := node.end_lineno - node.lineno + 1) > limit:
                over.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    return over


def test_no_module_over_400_lines() -> None:
    over = [f"{path.relative_to(PACKAGE)} ({count} lines)" for path in sorted(PACKAGE.rglob("*.py"))
            if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE]
    assert over == []


def test_no_class_over_300_lines_and_no_function_over_80() -> None:
    assert spans((ast.ClassDef,), MAX_CLASS) == []
    assert spans((ast.FunctionDef, ast.AsyncFunctionDef), MAX_FUNCTION) == []


def test_training_code_imports_at_module_level() -> None:
    local = []
    for path in sorted((PACKAGE / "train").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local += [f"{path.name}:{sub.lineno}" for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))]
    assert local == []
