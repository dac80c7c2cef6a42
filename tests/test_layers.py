"""The import rule (DESIGN.md), checked: ``make lint`` runs this file.

Every module under ``scalekit/`` and ``scripts/`` is parsed, never run. A floor imports
only the floors below it: ``core`` < ``connect``, ``wsgi`` < the pieces < ``cli``,
``testing`` < ``scripts``; two packages on one floor (two pieces, ``connect`` and ``wsgi``)
never import each other. No module imports another module's private (``_name``) name; a
package's own private submodules (``from . import _flight``) are the one exception. The
deprecated paths (``scalekit.errors`` ...) re-export ``core`` and nothing imports them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The floor of each top-level package or module of ``scalekit`` (``scalekit`` itself holds
#: only the version: anything may import it); ``scripts`` and ``python -m scalekit`` on top.
FLOORS = {
    "scalekit": -1,
    "core": 0,
    "connect": 1, "wsgi": 1, "shim": 1,
    "sessions": 2, "cache": 2, "tickets": 2, "db": 2, "static": 2, "maintenance": 2,
    "tasks": 2, "frontend": 2, "uploads": 2,
    "cli": 3, "testing": 3,
    "scripts": 4, "__main__": 4,
}  # fmt: skip
#: The deprecation shims of the modules that moved to ``scalekit.core``.
SHIMS = {"errors", "urls", "signing", "tagged_json"}


class Module(NamedTuple):
    name: str  # "scalekit.cache.model"
    package: str  # the package it is in ("scalekit.cache"); a package's own name for one
    path: Path


def unit(module: str) -> str | None:
    """The floor-table entry a module belongs to; ``None`` if not one of ours."""
    parts = module.split(".")
    if parts[0] == "scripts":
        return "scripts"
    if parts[0] != "scalekit":
        return None
    if len(parts) == 1:
        return "scalekit"
    return "shim" if parts[1] in SHIMS else parts[1]


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def modules_under(root: Path) -> dict[str, Module]:
    """The modules of ``scalekit/`` and ``scripts/`` under ``root``, by dotted name."""
    found = {}
    for path in sorted([*root.glob("scalekit/**/*.py"), *root.glob("scripts/**/*.py")]):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            name = ".".join(parts[:-1])
            found[name] = Module(name, name, path)
        else:
            name = ".".join(parts)
            found[name] = Module(name, name.rpartition(".")[0], path)
    return found


def imports(module: Module, known: dict[str, Module]):
    """``(line, module, name)`` for everything ``module`` imports: ``name`` is the imported
    name when it is not a module itself (``from x import name``), else ``None``."""
    for node in ast.walk(ast.parse(module.path.read_bytes(), str(module.path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                package = module.package.split(".")
                anchor = ".".join(package[: len(package) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    yield node.lineno, f"{base}.{alias.name}", None
                else:
                    yield node.lineno, base, None if alias.name == "*" else alias.name


def floor_problem(importer: str, target: str) -> str | None:
    """Why a module of unit ``importer`` may not import module ``target``, if it may not."""
    there = unit(target)
    if there is None or there == importer:
        return None
    if there == "shim":
        return f"imports the deprecated path {target}: import from scalekit.core"
    if there not in FLOORS:
        return f"imports {target}, on no floor: add {there!r} to FLOORS in tests/test_layers.py"
    if FLOORS[there] < FLOORS[importer]:
        return None
    side = "beside it" if FLOORS[there] == FLOORS[importer] else "a higher floor"
    return f"{importer} (floor {FLOORS[importer]}) imports {target}: {there} is {side}"


def privacy_problem(module: Module, target: str, name: str | None) -> str | None:
    """Why importing ``target`` (or its ``name``) reaches into another of our modules, if it
    does (what a dependency keeps private is that dependency's business)."""
    if unit(target) is None:
        return None
    parts = target.split(".")
    for depth, part in enumerate(parts):
        if is_private(part) and ".".join(parts[:depth]) != module.package:
            return f"imports {target}, a private module of another package"
    if name is not None and is_private(name):
        return f"imports {name}, a private name of {target}"
    return None


def violations(root: Path) -> list[str]:
    """Every break of the import rule under ``root``, as ``file:line: [rule] problem``."""
    known = modules_under(root)
    found = set()
    for module in known.values():
        importer = unit(module.name)
        where = str(module.path.relative_to(root))
        if importer not in FLOORS:
            found.add((where, 1, "floors", f"{module.name} is on no floor: add it to FLOORS"))
            continue
        for line, target, name in imports(module, known):
            for rule, problem in (
                ("floors", floor_problem(importer, target)),
                ("private", privacy_problem(module, target, name)),
            ):
                if problem:
                    found.add((where, line, rule, problem))
    return [f"{where}:{line}: [{rule}] {problem}" for where, line, rule, problem in sorted(found)]


def test_every_module_keeps_the_import_rule():
    found = violations(ROOT)
    assert not found, "the import rule (this file's docstring) is broken:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "package", [name for name, floor in FLOORS.items() if 0 <= floor <= 2 and name != "shim"]
)
def test_a_package_imported_alone_loads_nothing_beside_or_above_it(package):
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import scalekit.{package}"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    loaded = [line.rpartition("|")[2].strip() for line in run.stderr.splitlines()]
    beside_or_above = [
        name for name in loaded if unit(name) not in (None, package)
        and FLOORS.get(unit(name), FLOORS[package]) >= FLOORS[package]
    ]  # fmt: skip
    assert not beside_or_above, f"import scalekit.{package} loads {beside_or_above}"


def test_the_check_names_each_broken_import(tmp_path):
    tree = {
        "scalekit/__init__.py": "",
        "scalekit/errors.py": "from scalekit.core import errors\n",
        "scalekit/core/__init__.py": "import scalekit.cache\n",
        "scalekit/core/checks.py": "_PATTERN = 1\n",
        "scalekit/connect/__init__.py": "from scalekit import wsgi\nimport redis._parsers\n",
        "scalekit/wsgi/__init__.py": "",
        "scalekit/cache/__init__.py": "from . import _flight\nfrom ._flight import leased\n",
        "scalekit/cache/_flight.py": "from ..sessions import engine\n",
        "scalekit/cache/model.py": (
            "from scalekit.core.checks import _PATTERN\n"
            "from scalekit import errors\n"
            "def lazy():\n"
            "    from .. import sessions\n"
        ),
        "scalekit/cache/backends/__init__.py": "from scalekit.cache import _flight\n",
        "scalekit/sessions/__init__.py": "",
        "scalekit/sessions/engine.py": "import scalekit.sessions._cookies\n",
        "scalekit/sessions/_cookies.py": "",
        "scalekit/cli/__init__.py": "import scalekit.sessions._cookies\nfrom .. import cache\n",
        "scalekit/newpiece/__init__.py": "",
        "scripts/tool.py": "from scalekit.cli import main\n",
    }
    for name, text in tree.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert violations(tmp_path) == [
        "scalekit/cache/_flight.py:1: [floors] cache (floor 2) imports scalekit.sessions.engine: "
        + "sessions is beside it",
        "scalekit/cache/backends/__init__.py:1: [private] imports scalekit.cache._flight, "
        + "a private module of another package",
        "scalekit/cache/model.py:1: [private] imports _PATTERN, a private name of "
        + "scalekit.core.checks",
        "scalekit/cache/model.py:2: [floors] imports the deprecated path scalekit.errors: "
        + "import from scalekit.core",
        "scalekit/cache/model.py:4: [floors] cache (floor 2) imports scalekit.sessions: "
        + "sessions is beside it",
        "scalekit/cli/__init__.py:1: [private] imports scalekit.sessions._cookies, a private "
        + "module of another package",
        "scalekit/connect/__init__.py:1: [floors] connect (floor 1) imports scalekit.wsgi: "
        + "wsgi is beside it",
        "scalekit/core/__init__.py:1: [floors] core (floor 0) imports scalekit.cache: "
        + "cache is a higher floor",
        "scalekit/newpiece/__init__.py:1: [floors] scalekit.newpiece is on no floor: "
        + "add it to FLOORS",
    ]
