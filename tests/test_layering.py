"""Dependencies run one way: export builds on evaluation; evaluation never imports export."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "pet_fairseq"


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
              "    from pet_fairseq.export.ctranslate2 import convert\n"
              "    from ..export import unroll\n"
              "    import pet_fairseq.exporter\n")
    found = [(line, module) for line, module in imports(source, "pet_fairseq.evaluation")
             if module == "pet_fairseq.export" or module.startswith("pet_fairseq.export.")]
    assert sorted({line for line, _ in found}) == [2, 4, 5]
    assert (5, "pet_fairseq.export.unroll") in found


def test_evaluation_does_not_import_export():
    problems = forbidden_imports(module_files("evaluation"), ("pet_fairseq.export",))
    assert not problems, "pet_fairseq.evaluation must not import pet_fairseq.export:\n" + "\n".join(problems)


def test_export_does_not_import_the_comparison_tool():
    """export uses evaluation's lower-level modules, not its command line or its decoding process."""
    problems = forbidden_imports(module_files("export"),
                                 ("pet_fairseq.evaluation.compare", "pet_fairseq.evaluation.decode"))
    assert not problems, "pet_fairseq.export must not import the comparison tool:\n" + "\n".join(problems)


TOOLS = ("pet_fairseq.seqkd", "pet_fairseq.study", "pet_fairseq.export", "pet_fairseq.pruning", "pet_fairseq.translate",
         "pet_fairseq.evaluation", "pet_fairseq.kdcache")


def test_core_and_the_training_components_import_no_tool():
    """core/ and what fairseq-train loads (models, modules, tasks, criterions) sit below every tool."""
    files = [f for sub in ("core", "models", "modules", "tasks", "criterions") for f in module_files(sub)]
    problems = forbidden_imports(files, TOOLS)
    assert not problems, "core and the training components must not import a tool:\n" + "\n".join(problems)


def test_the_teacher_cache_builder_imports_no_other_tool():
    problems = forbidden_imports(module_files("kdcache"), tuple(t for t in TOOLS if t != "pet_fairseq.kdcache"))
    assert not problems, "pet_fairseq.kdcache must build on core, not on other tools:\n" + "\n".join(problems)
