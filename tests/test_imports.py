"""Every module of the package imports in this environment, and every package its code imports
(at the top of a module or inside a function) is installed: a dependency missing from
``pyproject.toml`` fails here, since ``make test`` runs in a fresh venv."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import pkgutil
import re
import sys
import tomllib
from pathlib import Path

import pytest

import saffron

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(saffron.__path__, "saffron.")
    if m.name != "saffron.__main__"  # it runs the command line
)


def test_the_walk_finds_every_layer() -> None:
    tops = {name.split(".")[1] for name in MODULES}
    assert {"cli", "data", "eval", "files", "lm", "reward", "search", "serve", "train"} <= tops


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    importlib.import_module(name)


def _imported_packages() -> dict[str, str]:
    """Top-level package of every absolute import in the source tree → one place using it."""
    root = Path(saffron.__file__).resolve().parent
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_every_imported_package_is_installed() -> None:
    """Also the imports inside functions (pyarrow for the hub loader, uvicorn for serve, …)."""
    missing = [
        f"{top} ({where})"
        for top, where in sorted(_imported_packages().items())
        if top not in sys.stdlib_module_names and importlib.util.find_spec(top) is None
    ]
    assert not missing, "imported but not installed: " + ", ".join(missing)


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_every_imported_package_is_declared() -> None:
    """Each third-party package the code imports is a direct dependency in pyproject.toml
    (not only reached through another package's dependencies), or one of an extra
    (``ray``: imported only by the code that ``--ray`` runs)."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    deps = project["dependencies"] + [d for name, ds in extras.items() if name != "dev" for d in ds]
    declared = {_normal(re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0]) for d in deps}
    dists = importlib.metadata.packages_distributions()
    undeclared = [
        f"{top} ({where})"
        for top, where in sorted(_imported_packages().items())
        if top not in sys.stdlib_module_names
        and top != "saffron"
        and not declared & {_normal(d) for d in dists.get(top, [top])}
    ]
    assert not undeclared, "imported but not declared: " + ", ".join(undeclared)
