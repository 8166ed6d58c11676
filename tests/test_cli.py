"""One command-line convention: every tool's errors derive from PetError and reach the console as one line."""

from __future__ import annotations

import argparse
import importlib
import logging
import subprocess
import sys
import tomllib

import pytest

from pet_fairseq.core.arguments import SHARED_DEFAULTS, OwnDefault, add_decoding_args, add_language_args, own_default_reason
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


def test_a_pet_error_that_fairseq_wraps_in_a_plain_exception_is_still_one_line():
    """fairseq-train re-raises a criterion's refusal to resume as ``Exception("Cannot load model parameters ...")``."""
    wrapped = run_python("import pet_fairseq\nfrom pet_fairseq.core.errors import ConfigError\n"
                         "try:\n    raise ConfigError('KD projections for a teacher of width 48')\n"
                         "except Exception:\n    raise Exception('Cannot load model parameters; ensure that the "
                         "architectures match')")
    assert wrapped.returncode == 1 and "Traceback" not in wrapped.stderr
    assert wrapped.stderr == "error: KD projections for a teacher of width 48\n"
    bug = run_python("import pet_fairseq\nfrom pet_fairseq.core.errors import ConfigError\n"
                     "try:\n    raise ConfigError('bad option')\nexcept Exception:\n    raise KeyError('bug')")
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


#: option string -> destination of every option the shared groups (pet_fairseq.core.arguments) declare
SHARED_OPTIONS = {"--" + dest.replace("_", "-"): dest for dest in SHARED_DEFAULTS}


def walk(name: str, parser: argparse.ArgumentParser):
    """``(name, parser)`` of ``parser`` and of its subcommands' parsers (``pet-export ctranslate2``, ...)."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from walk(f"{name} {sub}", subparser)


def command_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every console script's parser (subcommands included), built with its module's ``build_parser`` without
    running the tool. A module without one builds its parser inside ``main``: it must not declare a shared option."""
    found = []
    for name, target in entry_points().items():
        module = target.partition(":")[0]
        build = getattr(importlib.import_module(module), "build_parser", None)
        if build is None:
            source = (REPO / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
            declared = [option for option in SHARED_OPTIONS if f'"{option}"' in source]
            assert not declared, f"{name} declares {', '.join(declared)} in main: give it a build_parser() with the shared groups"
            continue
        found += walk(name, build())
    return found


def batch_size_or_max_tokens(parser: argparse.ArgumentParser, action: argparse.Action) -> bool:
    """Whether ``action`` is the ``--batch-size`` of ``add_decoding_args(max_tokens=True)``: one of it and
    ``--max-tokens``, ``None`` meaning the shared batch size unless ``--max-tokens`` is given."""
    return any(action in group._group_actions and any("--max-tokens" in a.option_strings for a in group._group_actions)
               for group in parser._mutually_exclusive_groups)


def test_every_command_gives_a_shared_option_the_same_destination_and_default():
    problems, seen = [], {option: [] for option in SHARED_OPTIONS}
    for name, parser in command_parsers():
        for action in parser._actions:
            for option in sorted(set(action.option_strings) & set(SHARED_OPTIONS)):
                dest = SHARED_OPTIONS[option]
                seen[option].append(name)
                if action.dest != dest:
                    problems.append(f"{name} {option}: destination {action.dest!r}, elsewhere {dest!r}")
                reason = own_default_reason(action)
                if action.default == SHARED_DEFAULTS[dest] or (dest == "batch_size" and action.default is None
                                                               and batch_size_or_max_tokens(parser, action)):
                    assert reason is None
                elif reason is None:
                    problems.append(f"{name} {option}: default {action.default!r}, elsewhere {SHARED_DEFAULTS[dest]!r}: "
                                    "use the shared group, or pass core.arguments.OwnDefault(value, why) to it")
                elif reason.replace("%", "%%") not in action.help:
                    problems.append(f"{name} {option}: the help does not say why the default differs")
    assert not problems, "\n".join(problems)
    # the check has something to check: every shared option is in several commands
    assert all(len(names) >= 2 for names in seen.values()), {option: names for option, names in seen.items() if len(names) < 2}
    assert {"pet-seqkd", "pet-prune", "pet-length-benchmark", "pet-speed-benchmark", "pet-kdcache", "pet-export ctranslate2",
            "pet-export shortlist", "pet-study"} <= {name for names in seen.values() for name in names}


def test_seqkd_keeps_the_decoding_defaults_its_corpora_and_studies_were_made_with():
    """A study records ``python -m pet_fairseq.seqkd`` commands without these options and reuses a corpus whose
    recorded command is unchanged, and every shard's fingerprint holds them: changing one changes the corpus."""
    from pet_fairseq.seqkd.cli import build_parser

    args = build_parser().parse_args(["bin", "--teacher", "t.pt", "--out", "out"])
    assert (args.beam, args.batch_size, args.max_tokens, args.max_len_a, args.max_len_b, args.lenpen, args.threads,
            args.parallel_batches, args.device) == (5, 128, 6000, 1.2, 10, 1.0, 0, 1, "cpu")


def test_an_own_default_needs_a_reason_and_another_value():
    add_decoding_args(argparse.ArgumentParser(), own={"beam": OwnDefault(4, "fast")})
    for own in ({"beam": OwnDefault(5, "same as the shared one")}, {"beam": OwnDefault(4, " ")},
                {"max_tokens": OwnDefault(10, "not a shared option")}):
        with pytest.raises(ValueError):
            add_decoding_args(argparse.ArgumentParser(), own=own)
    with pytest.raises(ValueError, match="does not declare"):
        add_decoding_args(argparse.ArgumentParser(), only=("batch_size",), own={"beam": OwnDefault(4, "fast")})
    parser = argparse.ArgumentParser()
    add_language_args(parser, own={"source_lang": OwnDefault("de", "100% German data")})
    action = next(a for a in parser._actions if a.dest == "source_lang")
    assert own_default_reason(action) == "100% German data" and "100% German data" in parser.format_help()
    assert parser.parse_args([]).source_lang == "de"


@pytest.mark.parametrize("option", ["--dataset", "--raw", "--out", "--src", "--tgt", "--teacher-updates", "--teacher"])
def test_quickstart_names_an_option_given_without_its_value(tmp_path, option):
    """An option given without its value (`--dataset` last) is one error line, not bash's '$2: unbound variable'."""
    out = tmp_path / "qs"
    argv = ["--out", str(out), option] if option != "--out" else ["--dataset", "multi30k", option]
    proc = subprocess.run(["bash", str(REPO / "scripts" / "quickstart.sh"), *argv], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and proc.stderr == f"error: {option} needs a value (see --help)\n"
    assert list(tmp_path.iterdir()) == []
