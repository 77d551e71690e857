"""Properties of the source tree that keep it readable: short functions, documented config
fields, and arrows that point down (nothing below the command line imports it)."""

from __future__ import annotations

import ast
from pathlib import Path

import saffron

SRC = Path(saffron.__file__).resolve().parent
MAX_LINES = 50


def _trees() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(SRC.rglob("*.py"))]


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(SRC.parent)}:{getattr(node, 'lineno', 0)}"


def test_no_function_is_longer_than_50_lines() -> None:
    """From the ``def`` line to the last line of the body, docstring included."""
    long = [
        f"{_where(path, node)} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in _trees()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]
    assert not long, "functions over 50 lines:\n" + "\n".join(long)


def _is_config(node: ast.ClassDef) -> bool:
    named = node.name.endswith(("Config", "Settings", "Spec"))
    return named and any("dataclass" in ast.unparse(d) for d in node.decorator_list)


def test_every_config_field_has_a_docstring() -> None:
    """A field of a config dataclass is followed by a string: its one-line docstring."""
    bare = []
    for path, tree in _trees():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and _is_config(n)):
            body = cls.body
            for i, stmt in enumerate(body):
                if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
                    continue
                nxt = body[i + 1] if i + 1 < len(body) else None
                documented = (
                    isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)
                )
                if not documented:
                    bare.append(f"{_where(path, stmt)} {cls.name}.{stmt.target.id}")
    assert not bare, "config fields without a docstring:\n" + "\n".join(bare)


def test_only_the_entry_points_import_the_command_line() -> None:
    """The CLI is the top layer: no library module imports ``saffron.cli``."""
    allowed = {SRC / "__main__.py", *(SRC / "cli").rglob("*.py")}
    upward = []
    for path, tree in _trees():
        if path in allowed:
            continue
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            if any(m == "saffron.cli" or m.startswith("saffron.cli.") for m in mods):
                upward.append(_where(path, node))
    assert not upward, "modules that import saffron.cli:\n" + "\n".join(upward)
