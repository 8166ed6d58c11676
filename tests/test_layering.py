"""Dependencies run one way: tools build on the core, never on each other.

The tools (:data:`TOOLS`: ``seqkd``, ``study``, ``export``, ``pruning``, ``translate``,
``evaluation``, ``kdcache``) may import the core (``core``), what fairseq-train loads (``models``,
``modules``, ``tasks``, ``criterions``), the text preparation library (``preprocessing``) and the
shared top-level modules (``sharing``, ``compat``, ...), but no other tool: what two tools share
lives below them, in ``core``. Neither the core and the training components nor ``preprocessing``
import any tool. A tool that needs another tool's command runs it as a subprocess
(``python -m pet_fairseq.X``). Every import counts, inside functions and relative ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "pet_fairseq"

TOOLS = ("pet_fairseq.seqkd", "pet_fairseq.study", "pet_fairseq.export", "pet_fairseq.pruning", "pet_fairseq.translate",
         "pet_fairseq.evaluation", "pet_fairseq.kdcache")


def imports(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source``, function bodies included.

    ``from a import b`` gives both ``a`` and ``a.b`` (``b`` may be a module); relative imports are
    resolved against ``package``, the package of the file ``source`` comes from.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def module_files(subpackage: str) -> list[Path]:
    """Every ``.py`` file under ``pet_fairseq/<subpackage>``."""
    files = sorted((PACKAGE / subpackage).rglob("*.py"))
    assert files, f"no Python files under {PACKAGE / subpackage}"
    return files


def forbidden_imports(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    """``path:line: imports module`` for each line of ``files`` that imports one of ``forbidden`` (or below)."""
    problems = {}
    for path in files:
        package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
        for line, module in imports(path.read_text(encoding="utf-8"), package):
            if any(module == name or module.startswith(name + ".") for name in forbidden):
                problems.setdefault((path.relative_to(REPO).as_posix(), line), module)
    return [f"{path}:{line}: imports {module}" for (path, line), module in sorted(problems.items())]


def test_the_checker_finds_imports_anywhere_absolute_or_relative():
    source = ("import os\n"
              "from pet_fairseq import export\n"
              "def evaluate():\n"
              "    from pet_fairseq.export.shortlist import write_shortlist\n"
              "    from ..export import shortlist\n"
              "    import pet_fairseq.exporter\n")
    found = [(line, module) for line, module in imports(source, "pet_fairseq.evaluation")
             if module == "pet_fairseq.export" or module.startswith("pet_fairseq.export.")]
    assert sorted({line for line, _ in found}) == [2, 4, 5]
    assert (5, "pet_fairseq.export.shortlist") in found


def test_every_tool_package_is_checked():
    """A new tool package must be added to TOOLS (or be a library below the tools)."""
    below = {"core", "models", "modules", "tasks", "criterions", "preprocessing"}
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages - below == {tool.split(".")[1] for tool in TOOLS}


@pytest.mark.parametrize("tool", TOOLS)
def test_a_tool_imports_no_other_tool(tool):
    others = tuple(other for other in TOOLS if other != tool)
    problems = forbidden_imports(module_files(tool.split(".")[1]), others)
    assert not problems, f"{tool} must build on core, not on other tools:\n" + "\n".join(problems)


def test_core_and_the_training_components_import_no_tool():
    """core/ and what fairseq-train loads (models, modules, tasks, criterions) sit below every tool."""
    files = [f for sub in ("core", "models", "modules", "tasks", "criterions") for f in module_files(sub)]
    problems = forbidden_imports(files, TOOLS)
    assert not problems, "core and the training components must not import a tool:\n" + "\n".join(problems)


def test_preprocessing_imports_no_tool():
    """The text preparation library (data_prep's scripts, the translation tool) sits below every tool."""
    problems = forbidden_imports(module_files("preprocessing"), TOOLS)
    assert not problems, "pet_fairseq.preprocessing must not import a tool:\n" + "\n".join(problems)
