"""One command-line convention: every tool's errors derive from PetError and reach the console as one line."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
import tomllib

import pytest

from pet_fairseq.core.cli import command, setup_logging
from pet_fairseq.core.errors import EXIT_USER_ERROR, ConfigError, MissingFileError, PetError
from tests.conftest import REPO, VENV_BIN

TOOL_ERRORS = [
    ("pet_fairseq.evaluation.errors", "EvaluationError"),
    ("pet_fairseq.core.errors", "ExportError"),
    ("pet_fairseq.core.errors", "InputError"),
    ("pet_fairseq.pruning.errors", "PruningError"),
    ("pet_fairseq.preprocessing.files", "PrepError"),
    ("pet_fairseq.seqkd.corpus", "SeqKDError"),
    ("pet_fairseq.study.spec", "SpecError"),
    ("pet_fairseq.core.teacher_cache", "TeacherCacheError"),
    ("pet_fairseq.translate.lines", "TranslateError"),
]


@pytest.mark.parametrize("module,name", TOOL_ERRORS)
def test_every_tool_error_is_a_pet_error(module, name):
    assert issubclass(getattr(importlib.import_module(module), name), PetError)


def test_config_errors_are_still_value_errors_for_callers_that_catch_those():
    assert issubclass(ConfigError, ValueError) and issubclass(MissingFileError, FileNotFoundError)


def test_a_command_turns_a_pet_error_into_one_line_and_exit_2(capsys):
    @command("demo")
    def main(argv=None):
        raise ConfigError(f"--width {argv[0]}: must be even; pass --width 4")

    assert main(["3"]) == EXIT_USER_ERROR == 2
    assert capsys.readouterr().err == "error: --width 3: must be even; pass --width 4\n"


def test_a_command_leaves_bugs_their_traceback():
    @command("demo")
    def main(argv=None):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        main([])


def test_a_command_reports_ctrl_c_as_one_line(capsys):
    @command("demo")
    def main(argv=None):
        raise KeyboardInterrupt

    assert main([]) == 130
    assert capsys.readouterr().err == "demo: interrupted\n"


def test_setup_logging_installs_one_handler_and_keeps_foreign_ones():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        root.addHandler(logging.StreamHandler())  # what fairseq's command modules install
        foreign = logging.NullHandler()
        root.addHandler(foreign)
        setup_logging("demo")
        setup_logging("demo")
        plain = [h for h in root.handlers if type(h) is logging.StreamHandler]  # noqa: E721
        assert len(plain) == 1 and foreign in root.handlers and root.level == logging.INFO
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
        line = plain[0].format(record)
        assert line.startswith("[demo ") and line.endswith("] hello")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_importing_the_plugin_prints_an_uncaught_pet_error_as_one_line():
    proc = run_python("import pet_fairseq\nfrom pet_fairseq.core.errors import ConfigError\n"
                      "raise ConfigError('--kd-alpha 2: must be in [0, 1]')")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == "error: --kd-alpha 2: must be in [0, 1]"
    assert "Traceback" not in proc.stderr
    bug = run_python("import pet_fairseq\nraise KeyError('bug')")
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "KeyError: 'bug'" in bug.stderr


def entry_points() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]


def test_every_command_is_a_decorated_main_and_runs_as_a_module_too():
    scripts = entry_points()
    assert len(scripts) >= 14 and all(name.startswith("pet-") for name in scripts)
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        main = getattr(importlib.import_module(module), attr)
        assert hasattr(main, "__wrapped__"), f"{name}: {target} is not wrapped by pet_fairseq.core.cli.command"
        source = (REPO / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
        runnable = "sys.exit(main())" in source or (
            (REPO / module.replace(".", "/")).parent.joinpath("__main__.py").is_file())
        assert runnable, f"{module} cannot be run with python -m"


def test_an_installed_command_reports_a_bad_input_in_one_line():
    proc = subprocess.run([str(VENV_BIN / "pet-plateau"), "report", "/nonexistent/train.log"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "error: /nonexistent/train.log does not exist: pass the run's fairseq log (train.log)\n"
