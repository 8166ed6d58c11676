"""The PET recipe (pet_fairseq.study.recipe, behind scripts/train_pet.sh): options, stage jobs, records and refusals.

The stages' commands are checked as built, and the flow (reuse, resume, refusal, --force, a failed stage) runs
with a stand-in for fairseq-train; tests/e2e/test_distillation_cli.py runs the real tools.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pet_fairseq.core.errors import ConfigError
from pet_fairseq.study.recipe import (
    USER_DIR,
    Inputs,
    StageFailed,
    check_options,
    distillation_jobs,
    optimizer_args,
    parse_args,
    resolve_inputs,
    run,
    teacher_job,
)
from pet_fairseq.study.runner import check_cached, differing_options, write_record
from pet_fairseq.study.spec import SpecError
from tests.conftest import REPO

OPTIM = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "5e-4", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "4000", "--warmup-init-lr", "1e-07", "--weight-decay", "0.0001", "--clip-norm", "0.0",
         "--dropout", "0.3", "--max-tokens", "4096", "--log-format", "simple", "--log-interval", "20",
         "--no-epoch-checkpoints"]


def args_of(*extra: str, data: str = "/data", out: str = "/out"):
    args = parse_args(["--data-bin", data, "--out", out, *extra])
    check_options(args)
    return args


def inputs(data: Path = Path("/data"), out: Path = Path("/out"), pair=("de", "en")) -> Inputs:
    return Inputs(data, out, pair, Path("/venv/bin/fairseq-train"), Path("/venv/bin/python"))


def value(argv: list[str], option: str) -> str:
    return argv[argv.index(option) + 1]


def test_defaults_are_the_bash_versions():
    args = args_of()
    assert (args.teacher_arch, args.student_arch, args.teacher_budget[1:], args.student_updates, args.seqkd,
            args.kd_mode, args.cache_k, args.teacher_patience, args.teacher_validate_every, args.teacher_metric,
            args.teacher_average, args.warmup_fraction) == \
        ("transformer_iwslt_de_en", "pet_iwslt_de_en", ("--max-epoch", "50"), "50000", "ctranslate2", "cached", "16",
         "5", "0", "bleu", "0", None)
    assert optimizer_args(args) == OPTIM and optimizer_args(args_of("--cpu")) == OPTIM + ["--cpu"]


def test_the_last_teacher_budget_given_counts():
    assert args_of("--teacher-max-update", "40", "--teacher-max-epoch", "3").teacher_budget[1:] == ("--max-epoch", "3")
    assert args_of("--teacher-max-epoch", "3", "--teacher-max-update", "40").teacher_budget[1:] == ("--max-update", "40")


def test_option_values_that_look_like_options_are_values():
    args = args_of("--seqkd-args", "--beam=2", "--kd-args", "--kd-alpha 0.1", "--student-args", "")
    assert (args.seqkd_args, args.kd_args, args.student_args) == ("--beam=2", "--kd-alpha 0.1", "")


@pytest.mark.parametrize("extra,message", [
    (["--student-updates", "0"], "--student-updates must be an integer >= 1, not '0' (fairseq reads 0 updates as 'no limit')"),
    (["--student-updates", "-5"], "--student-updates must be an integer >= 1, not '-5'"),
    (["--student-updates", "x"], "--student-updates must be an integer >= 1, not 'x'"),
    (["--teacher-max-update", "0"], "--teacher-max-update must be an integer >= 1, not '0'"),
    (["--teacher-max-epoch", "1.5"], "--teacher-max-epoch must be an integer >= 1, not '1.5'"),
    (["--max-tokens", "0"], "--max-tokens must be an integer >= 1, not '0'"),
    (["--cache-k", "0"], "--cache-k must be an integer >= 1, not '0'"),
    (["--teacher-patience", "-1"], "--teacher-patience must be an integer >= 0, not '-1'"),
    (["--seqkd", "marian"], "--seqkd must be ctranslate2, fairseq or none, not 'marian'"),
    (["--kd-mode", "offline"], "--kd-mode must be cached or online, not 'offline'"),
    (["--teacher-metric", "chrf"], "--teacher-metric must be bleu or loss, not 'chrf'"),
    (["--warmup-fraction", "1.5"], "--warmup-fraction must be a number in [0, 1), not '1.5'"),
    (["--dropout", "abc"], "--dropout must be a number in [0, 1), not 'abc'"),
    (["--lr", "0"], "--lr must be a number > 0, not '0'"),
    (["--teacher-average", "3"], "--teacher-average 3 averages the teacher's last validated checkpoints"),
])
def test_budgets_and_choices_are_checked_before_anything_runs(extra, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        args_of(*extra)


@pytest.mark.parametrize("gone", ["--warmup-epochs", "--kd-max-update", "--kd-max-epoch", "--warmup-args"])
def test_the_old_warmup_options_are_refused_with_what_replaces_them(gone):
    with pytest.raises(ConfigError, match=f"{gone} is gone: .* use --student-updates N and --warmup-fraction F"):
        parse_args(["--data-bin", "d", "--out", "o", gone, "3"])


def test_data_bin_and_out_are_required():
    with pytest.raises(ConfigError, match="--data-bin and --out are required"):
        check_options(parse_args(["--out", "o"]))


def test_inputs_check_the_paths_and_infer_the_pair(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    data = tmp_path / "data"
    with pytest.raises(ConfigError, match="is not a folder; binarize your data first"):
        resolve_inputs(args_of(data=str(data)), bin_dir)
    data.mkdir()
    for name in ("train.de-en.de.idx", "train.de-en.en.idx"):
        (data / name).write_text("")
    with pytest.raises(ConfigError, match="fairseq-train not found; run: bash scripts/install.sh"):
        resolve_inputs(args_of(data=str(data)), bin_dir)
    (bin_dir / "fairseq-train").write_text("#!/bin/sh\n")
    (bin_dir / "fairseq-train").chmod(0o755)
    assert resolve_inputs(args_of(data=str(data)), bin_dir).langs == ["--source-lang", "de", "--target-lang", "en"]
    assert resolve_inputs(args_of("--source-lang", "en", "--target-lang", "de", data=str(data)), bin_dir).pair == ("en", "de")
    with pytest.raises(ConfigError, match="pass both --source-lang and --target-lang"):
        resolve_inputs(args_of("--source-lang", "en", data=str(data)), bin_dir)
    with pytest.raises(ConfigError, match="--teacher /nonexistent.pt does not exist"):
        resolve_inputs(args_of("--teacher", "/nonexistent.pt", data=str(data)), bin_dir)
    (data / "train.en-fr.en.idx").write_text("")
    assert resolve_inputs(args_of(data=str(data)), bin_dir).pair is None  # two pairs: fairseq decides, as before


def test_the_default_recipe_is_teacher_corpus_cache_student_with_the_bash_versions_commands(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "bpe.code").write_text("")
    where = inputs(data, Path("/out"))
    args = args_of(data=str(data))
    teacher = teacher_job(args, where)
    assert teacher.argv[:6] == ["/venv/bin/fairseq-train", str(data), "--save-dir", "/out/teacher", "--source-lang", "de"]
    # the record is what the bash version wrote (data-bin, then the options), with the pair after the data-bin
    plateau = ["--patience", "5", "--eval-bleu", "--eval-bleu-remove-bpe", "subword_nmt", "--eval-bleu-args",
               '{"beam": 1, "max_len_a": 1.2, "max_len_b": 10}', "--eval-bleu-detok", "moses", "--eval-bleu-detok-args",
               '{"source_lang": "de", "target_lang": "en"}', "--best-checkpoint-metric", "bleu",
               "--maximize-best-checkpoint-metric"]
    bash_record = [str(data), "--arch", "transformer_iwslt_de_en", *OPTIM, "--max-epoch", "50", "--criterion",
                   "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--user-dir", str(USER_DIR), *plateau]
    assert teacher.accepts == [bash_record]
    assert teacher.recorded == bash_record[:1] + ["--source-lang", "de", "--target-lang", "en"] + bash_record[1:]
    assert (teacher.record, teacher.marker, teacher.log) == (Path("/out/teacher/command.txt"), Path("/out/teacher/.done"),
                                                             Path("/out/teacher/train.log"))
    assert not teacher.resumable and not teacher.is_corpus

    corpus, cache, student = distillation_jobs(args, where, Path("/out/teacher/checkpoint_best.pt"))
    assert corpus.argv == ["/venv/bin/python", "-m", "pet_fairseq.seqkd", str(data), "--teacher",
                           "/out/teacher/checkpoint_best.pt", "--out", "/out/seqkd", "--engine", "ctranslate2", "--device",
                           "cpu", "--source-lang", "de", "--target-lang", "en"]
    assert corpus.accepts == [["--teacher", "/out/teacher/checkpoint_best.pt", "--engine", "ctranslate2", "--source-lang",
                               "de", "--target-lang", "en"]]  # the bash version's OUT/seqkd.command.txt
    assert corpus.recorded == [str(data)] + corpus.accepts[0]  # now with the data-bin it decodes
    assert (corpus.record, corpus.marker, corpus.log) == (Path("/out/seqkd.command.txt"), Path("/out/seqkd/seqkd.json"),
                                                          Path("/out/seqkd.log"))
    assert cache.argv[1:] == ["-m", "pet_fairseq.kdcache", "/out/seqkd", "--teacher", "/out/teacher/checkpoint_best.pt",
                              "--out", "/out/cache", "--k", "16", "--source-lang", "de", "--target-lang", "en"]
    assert cache.recorded == ["/out/seqkd", "/out/teacher/checkpoint_best.pt", "16"] and cache.record == Path("/out/cache.command.txt")
    assert cache.marker == Path("/out/cache/cache.json") and corpus.is_corpus and cache.is_corpus
    assert student.accepts == [["/out/seqkd", "--user-dir", str(USER_DIR), "--task", "pet_distillation", "--teacher-path",
                                "/out/teacher/checkpoint_best.pt", "--criterion", "pet_kd", "--arch", "pet_iwslt_de_en",
                                *OPTIM, "--max-update", "50000", "--teacher-cache", "/out/cache", "--inter-beta", "0",
                                "--encoder-layer-map", "", "--decoder-layer-map", ""]]
    assert student.resumable and student.argv[1:4] == ["/out/seqkd", "--save-dir", "/out/student"]


def test_online_kd_without_a_corpus_is_the_student_alone_on_the_references():
    args = args_of("--seqkd", "none", "--kd-mode", "online", "--warmup-fraction", "0.25", "--student-args",
                   "--encoder-embed-dim 48", "--kd-args", "--kd-alpha 0.1 --eval-bleu-args '{\"beam\": 1}'")
    (student,) = distillation_jobs(args, inputs(), Path("/t.pt"))
    assert student.argv[1] == "/data" and "--teacher-cache" not in student.argv and value(student.argv, "--teacher-path") == "/t.pt"
    assert student.argv[-8:] == ["--warmup-fraction", "0.25", "--encoder-embed-dim", "48", "--kd-alpha", "0.1",
                                 "--eval-bleu-args", '{"beam": 1}']  # quoted extra options are one argument


def test_cache_states_caches_every_teacher_layer_and_keeps_the_intermediate_loss():
    args = args_of("--seqkd", "none", "--cache-states")
    cache, student = distillation_jobs(args, inputs(), Path("/t.pt"))
    assert cache.argv[-4:] == ["--encoder-states", "all", "--decoder-states", "all"]
    assert cache.recorded == ["/data", "/t.pt", "16", "--encoder-states", "all", "--decoder-states", "all"]
    assert value(student.argv, "--teacher-cache") == "/out/cache"
    assert "--inter-beta" not in student.argv and "--encoder-layer-map" not in student.argv  # pet_kd's defaults
    plain_cache, plain_student = distillation_jobs(args_of("--seqkd", "none"), inputs(), Path("/t.pt"))
    assert plain_cache.recorded == ["/data", "/t.pt", "16"] and value(plain_student.argv, "--inter-beta") == "0"
    with pytest.raises(ConfigError, match="--cache-states fills the teacher cache of --kd-mode cached; --kd-mode online"):
        args_of("--kd-mode", "online", "--cache-states")


def test_the_teacher_validates_every_n_updates_and_keeps_what_it_averages():
    argv = teacher_job(args_of("--teacher-validate-every", "250", "--teacher-average", "3", "--teacher-metric", "loss",
                               "--teacher-patience", "0", "--teacher-max-update", "5000", "--teacher-args", "--seed 2"),
                       inputs(pair=None)).argv
    assert value(argv, "--validate-interval-updates") == value(argv, "--save-interval-updates") == "250"
    assert value(argv, "--keep-interval-updates") == "3" and value(argv, "--max-update") == "5000"
    assert "--patience" not in argv and "--eval-bleu" not in argv and "--source-lang" not in argv
    assert argv[-2:] == ["--seed", "2"]


def write_bash_record(path: Path, args: list[str]) -> None:
    """What the bash version's ``printf '%s\\n' ARGS > RECORD`` wrote."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(a + "\n" for a in args))


def finished(job) -> None:
    job.output.mkdir(parents=True, exist_ok=True)
    job.marker.write_text("")  # the bash version's touch .done


def test_a_changed_stage_is_refused_naming_the_differing_options(tmp_path):
    student = distillation_jobs(args_of("--kd-mode", "online", out=str(tmp_path)), inputs(out=tmp_path), Path("/t.pt"))[-1]
    finished(student)
    write_record(student.record, student.recorded)
    assert check_cached(student)
    changed = distillation_jobs(args_of("--kd-mode", "online", "--student-args", "--dropout 0.2", out=str(tmp_path)),
                                inputs(out=tmp_path), Path("/t.pt"))[-1]
    with pytest.raises(SpecError) as refused:
        check_cached(changed)
    assert str(refused.value) == (
        f"the student stage in {tmp_path / 'student'} was run with other options (differing: --dropout 0.3 then 0.2 "
        "(was 0.3)); pass --force to redo every stage, choose another --out, or rerun with the same options")


def test_differing_options_are_named_with_their_values():
    assert differing_options(["d", "--lr", "1", "--cpu"], ["d", "--lr", "2", "--seed", "3"]) == \
        "--lr 2 (was 1); --seed 3 (not given before); --cpu (not given now)"
    assert differing_options(["d1", "--lr", "1"], ["d2", "--lr", "1"]) == "d2 (was d1)"
    assert differing_options(["--a", "1", "--b", "2"], ["--b", "2", "--a", "1"]) == "the same options in another order"


def test_a_larger_student_budget_resumes_and_a_smaller_one_is_refused(tmp_path, caplog):
    def student(updates: str):
        return distillation_jobs(args_of("--student-updates", updates, out=str(tmp_path)), inputs(out=tmp_path),
                                 Path("/t.pt"))[-1]

    finished(student("10"))
    write_record(student("10").record, student("10").recorded)
    with caplog.at_level(logging.INFO):
        assert check_cached(student("15")) is False
    assert "student: resuming from 10 to 15 updates" in caplog.text
    with pytest.raises(SpecError, match=r"differing: --max-update 5 \(was 10\)"):
        check_cached(student("5"))
    write_bash_record(student("10").record, student("10").accepts[0])  # a bash-made student resumes too
    assert check_cached(student("15")) is False


def test_a_folder_made_by_the_bash_version_is_reused(tmp_path):
    """Records without the pair (and the corpus's without the data-bin), paths written with a doubled slash."""
    out = tmp_path / "run"
    where = inputs(out=out)
    args = args_of(out=str(out))
    teacher = out / "teacher" / "checkpoint_best.pt"
    jobs = [teacher_job(args, where)] + distillation_jobs(args, where, teacher)
    for job in jobs:
        finished(job)
        record = [a.replace(str(out), str(out) + "/") for a in job.accepts[0]] if job.accepts else job.recorded
        write_bash_record(job.record, record)
    assert all(check_cached(job) for job in jobs)


def test_the_records_are_the_bash_versions_files(tmp_path):
    job = distillation_jobs(args_of(out=str(tmp_path)), inputs(out=tmp_path), Path("/t.pt"))[-1]
    job.output.mkdir()
    write_record(job.record, job.recorded)  # one argument a line, the empty layer maps included
    assert job.record.read_text() == "".join(a + "\n" for a in job.recorded) and "--encoder-layer-map\n\n" in job.record.read_text()


FAKE_TRAIN = """\
import os, sys
argv = sys.argv[1:]
save = argv[argv.index("--save-dir") + 1]
updates = int(argv[argv.index("--max-update") + 1]) if "--max-update" in argv else 40
if os.environ.get("FAKE_FAIL") and os.environ["FAKE_FAIL"] in save:
    print("something broke", file=sys.stderr)
    sys.exit(int(os.environ.get("FAKE_STATUS", "3")))
for n in (updates // 2, updates):
    print(f"2026-12-01 10:00:{n % 60:02d} | INFO | valid | epoch 001 | valid on 'valid' subset | loss 5 | nll_loss 4 | "
          f"bleu {n / 4} | num_updates {n}")
for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
    open(os.path.join(save, name), "w").write(str(updates))
"""


@pytest.fixture
def fake_bin(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    train = bin_dir / "fairseq-train"
    train.write_text(f"#!{sys.executable}\n" + FAKE_TRAIN)
    train.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.de-en.de.idx", "train.de-en.en.idx"):
        (data / name).write_text("")
    return bin_dir, data


def test_the_recipe_reuses_resumes_refuses_and_forces_its_stages(fake_bin, tmp_path, caplog):
    bin_dir, data = fake_bin
    out = tmp_path / "run"
    base = ["--data-bin", str(data), "--out", str(out), "--cpu", "--seqkd", "none", "--kd-mode", "online",
            "--teacher-max-update", "40", "--teacher-validate-every", "20"]
    caplog.set_level(logging.INFO)
    assert run(parse_args(base + ["--student-updates", "10"]), bin_dir) == 0
    assert "teacher: training transformer_iwslt_de_en" in caplog.text and "(fairseq log: " in caplog.text
    assert "teacher: stopped at update 40" in caplog.text and f"teacher: {out / 'teacher' / 'checkpoint_best.pt'}" in caplog.text
    assert json.loads((out / "teacher" / "plateau.json").read_text())["best_update"] == 40
    assert json.loads((out / "student" / ".done").read_text())["updates"] == 10  # the runner's wall-time record
    record = (out / "student" / "command.txt").read_text().splitlines()
    assert record[:5] == [str(data), "--source-lang", "de", "--target-lang", "en"]
    assert record[record.index("--teacher-path") + 1] == str(out / "teacher" / "checkpoint_best.pt")

    caplog.clear()
    assert run(parse_args(base + ["--student-updates", "10"]), bin_dir) == 0
    assert "teacher: reusing" in caplog.text and "student: reusing" in caplog.text and "started" not in caplog.text

    caplog.clear()
    assert run(parse_args(base + ["--student-updates", "15"]), bin_dir) == 0
    assert "student: resuming from 10 to 15 updates" in caplog.text and "teacher: reusing" in caplog.text
    assert (out / "student" / "checkpoint_last.pt").read_text() == "15"

    with pytest.raises(SpecError, match=r"the teacher stage in .* \(differing: --max-update 50 \(was 40\)\); pass --force"):
        run(parse_args(base + ["--teacher-max-update", "50"]), bin_dir)
    assert run(parse_args(base + ["--teacher-max-update", "50", "--force", "--teacher-only"]), bin_dir) == 0
    assert (out / "teacher" / "checkpoint_last.pt").read_text() == "50" and not (out / "student").exists()


def test_a_stage_that_fails_before_a_checkpoint_leaves_only_its_log(fake_bin, tmp_path, monkeypatch, capsys):
    bin_dir, data = fake_bin
    out = tmp_path / "run"
    monkeypatch.setenv("FAKE_FAIL", "teacher")
    with pytest.raises(StageFailed, match="teacher failed before writing a checkpoint; removed its empty save dir") as failed:
        run(parse_args(["--data-bin", str(data), "--out", str(out), "--teacher-only"]), bin_dir)
    assert failed.value.exit_status == 1  # the tool crashed (exit 3)
    assert not (out / "teacher").exists() and "something broke" in (out / "teacher.failed.log").read_text()
    assert "something broke" in capsys.readouterr().err  # the log's last lines reach the console


def test_a_stage_whose_tool_refuses_its_input_makes_the_recipe_exit_2(fake_bin, tmp_path, monkeypatch, capsys):
    """A tool's exit 2 (its one ``error:`` line: bad input) is the recipe's exit status too."""
    from pet_fairseq.study import recipe

    bin_dir, data = fake_bin
    monkeypatch.setenv("FAKE_FAIL", "teacher")
    monkeypatch.setenv("FAKE_STATUS", "2")
    monkeypatch.setattr(recipe.sys, "executable", str(bin_dir / "python"))  # main() finds fairseq-train beside it
    code = recipe.main(["--data-bin", str(data), "--out", str(tmp_path / "run"), "--teacher-only"])
    err = capsys.readouterr().err
    assert code == 2 and "something broke" in err
    assert err.splitlines()[-1].startswith("error: teacher failed before writing a checkpoint")


def test_force_never_removes_the_given_teacher(fake_bin, tmp_path):
    bin_dir, data = fake_bin
    out = tmp_path / "run"
    (out / "teacher").mkdir(parents=True)
    (out / "teacher" / "mine.pt").write_text("")
    with pytest.raises(ConfigError, match="--force would remove --teacher"):
        run(parse_args(["--data-bin", str(data), "--out", str(out), "--teacher", str(out / "teacher" / "mine.pt"),
                        "--force"]), bin_dir)
    assert (out / "teacher" / "mine.pt").exists()


def test_train_pet_sh_runs_the_recipe_and_keeps_its_help(tmp_path):
    script = REPO / "scripts" / "train_pet.sh"
    venv = Path(sys.executable).parent.parent
    helped = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PET_VENV": str(venv)})
    assert helped.returncode == 0 and "--student-updates N" in helped.stdout and "--teacher-validate-every" in helped.stdout
    bare = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PET_VENV": str(tmp_path / "none")})
    assert bare.returncode == 0 and "teacher -> sequence-level KD corpus" in bare.stdout
    refused = subprocess.run(["bash", str(script), "--data-bin", str(tmp_path), "--out", str(tmp_path / "x"),
                              "--student-updates", "0"], capture_output=True, text=True, timeout=120,
                             env={"PATH": "/usr/bin:/bin", "PET_VENV": str(venv)})
    assert refused.returncode == 2 and refused.stderr.startswith("error: --student-updates must be an integer >= 1")
    assert not (tmp_path / "x").exists()


def test_an_out_that_is_a_file_and_a_teacher_of_another_direction_are_refused_before_any_stage(tmp_path):
    from pet_fairseq.study.teacher import check_teacher
    from tests.conftest import make_checkpoint, toy_dictionary, write_data_dir

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fairseq-train").write_text("#!/bin/sh\n")
    (bin_dir / "fairseq-train").chmod(0o755)
    data = write_data_dir(tmp_path / "data", toy_dictionary(40))
    afile = tmp_path / "afile"
    afile.write_text("kept\n")
    for out in (afile, afile / "sub"):
        with pytest.raises(ConfigError, match=f"--out {out}: {afile} is a file, not a folder; choose another --out"):
            resolve_inputs(args_of(data=str(data), out=str(out)), bin_dir)
    assert afile.read_text() == "kept\n"
    teacher, _, _ = make_checkpoint(tmp_path / "t.pt", data, "transformer", "--encoder-layers", "1", "--decoder-layers",
                                    "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
                                    "--encoder-ffn-embed-dim", "16", "--decoder-ffn-embed-dim", "16")  # de->en
    check_teacher(teacher, ("de", "en"))
    check_teacher(teacher, None)  # no pair given or inferred: the stages' tools decide
    with pytest.raises(ConfigError, match=r"t\.pt translates de->en, but this run trains en->de: pass a teacher"):
        check_teacher(teacher, ("en", "de"))
    notes = tmp_path / "notes.pt"
    notes.write_text("hello\n")
    with pytest.raises(ConfigError, match="is not a fairseq checkpoint"):
        run(parse_args(["--data-bin", str(data), "--out", str(tmp_path / "o"), "--teacher", str(notes)]), bin_dir)
    assert not (tmp_path / "o").exists()
