"""Bad inputs and faults through the installed command-line tools, each asserting the refusal or the right result.

Every case runs a real process (``pet-translate``, ``pet-seqkd``, ``pet-export``, ``pet-compare``,
``pet-study``, ``fairseq-train --user-dir``, ``scripts/*.sh``, ``data_prep/*.sh``) on a small Multi30k
data-bin with subword-nmt BPE and its ``preprocessing.json``, and checks the exit status, the key words of
the one ``error:`` line, that no traceback or import-time noise is printed, and that files the user had
keep their SHA-256. The models are random 1- or 2-layer transformers: their hypotheses run to the length
limit, which is what the "weak teacher" cases need and costs seconds to decode.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from pet_fairseq.preprocessing.bpe import SUBWORD_NMT, learn_subword_nmt, segment_lines
from pet_fairseq.preprocessing.files import read_lines
from pet_fairseq.preprocessing.recipe import RECIPE_FILE, DataRecipe
from tests.conftest import REPO, VENV_BIN, make_checkpoint
from tests.e2e.conftest import USER_DIR, fairseq, run

pytestmark = pytest.mark.e2e

TINY = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
        "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2", "--share-all-embeddings"]
#: the same, 32 wide: a teacher of another width
WIDER = [("32" if value == "16" else "64" if value == "32" else value) for value in TINY]
SENTENCES = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest ein Buch."]
#: what fairseq and torch print at import time, which the project's own commands keep off the console
NOISE = ("tensorboardX", "DeprecationWarning", "FutureWarning", "UserWarning", "DEBUG:")


def tool(name: str, *args: str, timeout: int = 300, **kwargs) -> subprocess.CompletedProcess:
    """An installed console script of this project (``pet-translate``, ...), its output captured."""
    return subprocess.run([str(VENV_BIN / name), *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str | None]:
    """Every file (its SHA-256) and folder (``None``) under ``root``."""
    return {str(p.relative_to(root)): sha256(p) if p.is_file() else None for p in sorted(root.rglob("*"))}


def refused(proc: subprocess.CompletedProcess, *words: str, status: int = 2) -> str:
    """Assert a refusal: ``status``, one ``error:`` line holding ``words``, no traceback; returns the line."""
    context = proc.stderr[-3000:]
    assert proc.returncode == status, context
    assert "Traceback" not in proc.stderr, context
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, context
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def quiet(text: str) -> None:
    """No import-time noise of fairseq, torch or matplotlib."""
    for noise in NOISE:
        assert noise not in text, (noise, text[-3000:])


def env_with(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


# --------------------------------------------------------------------------------------------
# a small BPE data-bin with its recipe, random models on it


@pytest.fixture(scope="module")
def bpe_bin(multi30k_bin, tmp_path_factory) -> Path:
    """1,000 train / 100 valid / 50 test pairs of the session's Multi30k text with 300 joint BPE merges, binarized,
    with the ``bpe.code`` and ``preprocessing.json`` that data_prep/prepare-*.sh leave in a data-bin."""
    text, work = multi30k_bin.parent, tmp_path_factory.mktemp("bad_input_data")
    for split, count in (("train", 1000), ("valid", 100), ("test", 50)):
        for lang in ("de", "en"):
            (work / f"{split}.{lang}.tok").write_text(
                "".join(line + "\n" for line in list(read_lines(text / f"{split}.{lang}"))[:count]), encoding="utf-8")
    codes = work / "code"
    learn_subword_nmt([work / "train.de.tok", work / "train.en.tok"], codes, 300)
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            (work / f"{split}.{lang}").write_text("".join(
                line + "\n" for line in segment_lines(SUBWORD_NMT, codes, read_lines(work / f"{split}.{lang}.tok"))),
                encoding="utf-8")
    data_bin = work / "data-bin"
    run([fairseq("preprocess"), "--source-lang", "de", "--target-lang", "en", "--joined-dictionary",
         "--trainpref", str(work / "train"), "--validpref", str(work / "valid"), "--testpref", str(work / "test"),
         "--destdir", str(data_bin), "--workers", "1"])
    shutil.copyfile(codes, data_bin / "bpe.code")
    recipe = DataRecipe("de", "en", lowercase=True, bpe="subword_nmt", bpe_model=data_bin / "bpe.code", dataset="multi30k")
    (data_bin / RECIPE_FILE).write_text(json.dumps(recipe.to_json(data_bin)), encoding="utf-8")
    return data_bin


@pytest.fixture(scope="module")
def models(bpe_bin, tmp_path_factory) -> dict[str, Path]:
    """Random de->en transformers (``-s de -t en`` recorded): ``narrow`` (16 wide) and ``wide`` (32 wide)."""
    folder = tmp_path_factory.mktemp("bad_input_models")
    narrow, _, _ = make_checkpoint(folder / "narrow.pt", bpe_bin, "transformer", *TINY, seed=1)
    wide, _, _ = make_checkpoint(folder / "wide.pt", bpe_bin, "transformer", *WIDER, seed=2)
    return {"narrow": narrow, "wide": wide}


@pytest.fixture(scope="module")
def raw_input(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad_input_text") / "input.de"
    path.write_text("".join(line + "\n" for line in SENTENCES), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# pet-translate


def test_translate_refuses_a_direction_that_contradicts_the_checkpoint(models, raw_input, tmp_path):
    output = tmp_path / "out.en"
    output.write_text("my earlier translations\n", encoding="utf-8")
    before = sha256(output)
    proc = tool("pet-translate", str(models["narrow"]), str(raw_input), "--output", str(output),
                "--source-lang", "en", "--target-lang", "de", "--max-len-b", "5")
    refused(proc, "translates de->en", "--source-lang en --target-lang de asks for en->de",
            "drop --source-lang en --target-lang de")
    quiet(proc.stderr)
    assert sha256(output) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out.en"]


def _wait_for_lines(path_glob, folder: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> Path:
    """The temporary output file once it holds ``count`` lines (the run still going)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        found = list(folder.glob(path_glob))
        if found and found[0].read_text(encoding="utf-8").count("\n") >= count:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {path_glob} with {count} lines in {folder} after {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_translate_leaves_an_existing_output_as_it_was(models, tmp_path, sig):
    """--output is written to a temporary file renamed into place when complete: a run stopped after some
    lines (the input still open) leaves the user's file byte for byte; SIGTERM also removes the temporary file."""
    output = tmp_path / "out.en"
    output.write_text("my earlier translations\n", encoding="utf-8")
    before = sha256(output)
    proc = subprocess.Popen([str(VENV_BIN / "pet-translate"), str(models["narrow"]), "--output", str(output),
                             "--buffer-size", "1", "--max-len-b", "5"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write(SENTENCES[0] + "\n" + SENTENCES[1] + "\n")
        proc.stdin.flush()
        partial = _wait_for_lines(".out.en.*.tmp", tmp_path, 2, proc)
        assert sha256(output) == before  # translated lines go to the temporary file only
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()
    assert sha256(output) == before
    assert partial.exists() == (sig == signal.SIGKILL)  # only a SIGKILL cannot clean up
    done = tool("pet-translate", str(models["narrow"]), "--output", str(output), "--max-len-b", "5",
                input="".join(line + "\n" for line in SENTENCES))
    assert done.returncode == 0, done.stderr[-2000:]
    quiet(done.stderr)
    assert output.read_text(encoding="utf-8").count("\n") == len(SENTENCES)


def test_translate_has_no_shortlist_like_export_translate(models, bpe_bin, raw_input, tmp_path):
    """A CTranslate2 export with a shortlist decodes over the whole vocabulary with ``--no-shortlist``: the
    hypotheses of the same export without one."""
    pytest.importorskip("ctranslate2")
    vmap = tmp_path / "train.vmap"
    made = tool("pet-export", "shortlist", str(vmap), "--data-bin", str(bpe_bin), "--source-lang", "de",
                "--target-lang", "en", "--frequent", "5", "--per-token", "2")
    assert made.returncode == 0, made.stderr[-2000:]
    exports = {}
    for name, extra in (("shortlist", ["--vocab-shortlist", str(vmap)]), ("plain", [])):
        exports[name] = tmp_path / name
        made = tool("pet-export", "ctranslate2", str(models["narrow"]), str(exports[name]), "--data-bin", str(bpe_bin),
                    *extra)
        assert made.returncode == 0, made.stderr[-2000:]
    outputs = {}
    for name, model, extra in (("whole", exports["shortlist"], ["--no-shortlist"]), ("plain", exports["plain"], []),
                               ("shortlist", exports["shortlist"], [])):
        proc = tool("pet-translate", str(model), str(raw_input), "--max-len-b", "8", "--threads", "1", *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        quiet(proc.stderr)
        outputs[name] = proc.stdout
    assert outputs["whole"] == outputs["plain"] and outputs["plain"].count("\n") == len(SENTENCES)
    assert outputs["shortlist"].count("\n") == len(SENTENCES)


# --------------------------------------------------------------------------------------------
# artifacts carry what is needed to use them: a seq-KD corpus and its student


def test_a_student_trained_on_a_seqkd_corpus_translates_raw_text_with_no_extra_flags(bpe_bin, models, raw_input,
                                                                                      tmp_path):
    """The corpus inherits preprocessing.json and the BPE codes; its student (and an export of it) translates
    raw text after the original data-bin is gone, through pet-translate with no --data-bin or --recipe."""
    source = tmp_path / "data-bin"
    shutil.copytree(bpe_bin, source)
    corpus = tmp_path / "seqkd"
    proc = tool("pet-seqkd", str(source), "--teacher", str(models["narrow"]), "--out", str(corpus), "--split", "test",
                "--beam", "1", "--threads", "1", "--degenerate", "keep")
    assert proc.returncode == 0, proc.stderr[-3000:]
    quiet(proc.stderr)
    assert "recipe: preprocessing.json, bpe.code" in proc.stderr
    assert (corpus / "bpe.code").read_bytes() == (bpe_bin / "bpe.code").read_bytes()
    save = tmp_path / "student"
    run([fairseq("train"), str(corpus), "--user-dir", USER_DIR, "-s", "de", "-t", "en", "--arch", "pet_transformer",
         "--encoder-layer-plan", "0,0~", "--decoder-layer-plan", "0,0~", *TINY[4:], "--optimizer", "adam", "--lr", "1e-3",
         "--max-tokens", "2000", "--max-update", "1", "--save-dir", str(save), "--no-epoch-checkpoints",
         "--disable-validation", "--cpu", "--num-workers", "0", "--seed", "1"])
    shutil.rmtree(source)  # everything the student needs is in the corpus
    student = save / "checkpoint_last.pt"
    models_to_try = [student]
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        pass
    else:
        export = tmp_path / "student-ct2"
        made = tool("pet-export", "ctranslate2", str(student), str(export))
        assert made.returncode == 0, made.stderr[-2000:]
        models_to_try.append(export)
    for model in models_to_try:
        proc = tool("pet-translate", str(model), str(raw_input), "--max-len-b", "5", "--threads", "1")
        assert proc.returncode == 0, proc.stderr[-2000:]
        quiet(proc.stderr)
        assert proc.stdout.count("\n") == len(SENTENCES) and "de->en" in proc.stderr


# --------------------------------------------------------------------------------------------
# shortlists are checked against the model


@pytest.mark.parametrize("kind", ["swapped", "other data-bin"])
def test_export_refuses_a_shortlist_that_does_not_fit_the_model(models, bpe_bin, multi30k_bin, tmp_path, kind):
    pytest.importorskip("ctranslate2")
    previous = tmp_path / "previous-export"
    made = tool("pet-export", "ctranslate2", str(models["narrow"]), str(previous), "--data-bin", str(bpe_bin))
    assert made.returncode == 0, made.stderr[-2000:]
    before = tree(previous)
    vmap = tmp_path / f"{kind.replace(' ', '-')}.vmap"
    langs = ["en", "de"] if kind == "swapped" else ["de", "en"]
    made = tool("pet-export", "shortlist", str(vmap), "--data-bin", str(multi30k_bin if kind != "swapped" else bpe_bin),
                "--source-lang", langs[0], "--target-lang", langs[1])
    assert made.returncode == 0, made.stderr[-2000:]
    proc = tool("pet-export", "ctranslate2", str(models["narrow"]), str(previous), "--data-bin", str(bpe_bin),
                "--force", "--vocab-shortlist", str(vmap))
    words = ["en->de (source and target swapped)", "translates de->en"] if kind == "swapped" else \
        ["was built with the dictionaries of", "is not the model's"]
    refused(proc, f"the vocabulary shortlist {vmap}", *words, "rebuild it for this model", "--source-lang de")
    quiet(proc.stderr)
    assert tree(previous) == before


# --------------------------------------------------------------------------------------------
# a seq-KD corpus that would be the references


def test_seqkd_refuses_a_corpus_of_references_and_keeps_an_existing_out(bpe_bin, models, tmp_path):
    out = tmp_path / "seqkd"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n", encoding="utf-8")
    before = tree(out)
    proc = tool("pet-seqkd", str(bpe_bin), "--teacher", str(models["narrow"]), "--out", str(out), "--split", "test",
                "--beam", "1", "--threads", "1", "--force")
    line = refused(proc, "of 50 hypotheses", "would be replaced by their references", "more than --max-replaced 0.2",
                   "the teacher is likely undertrained", "accept this corpus with --max-replaced 1")
    quiet(proc.stderr)
    assert line.startswith("error: ") and tree(out) == before


def _read_until_eof(stream, into: dict, key: str) -> None:
    into[key] = stream.read()
    into[key + "_eof"] = time.time()


def test_train_pet_stops_before_distilling_from_references_and_releases_its_pipes(bpe_bin, models, tmp_path):
    """The recipe's corpus stage with a teacher whose every hypothesis runs to the length limit fails with the
    seq-KD tool's refusal and its exit status 2; no cache or student is made; the console pipes close when the runner
    exits."""
    out = tmp_path / "run"
    proc = subprocess.Popen(["bash", str(REPO / "scripts" / "train_pet.sh"), "--data-bin", str(bpe_bin), "--out", str(out),
                             "--teacher", str(models["narrow"]), "--cpu", "--seqkd", "fairseq",
                             "--seqkd-args", "--beam 1 --threads 1", "--student-updates", "5", "--max-tokens", "2000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_with(PET_VENV=str(Path(sys.executable).parents[1])))
    read: dict = {}
    readers = [threading.Thread(target=_read_until_eof, args=(stream, read, key))
               for stream, key in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
    for reader in readers:
        reader.start()
    status = proc.wait(timeout=300)
    exited = time.time()
    for reader in readers:
        reader.join(timeout=30)
    assert not any(reader.is_alive() for reader in readers), "the console pipes stayed open after the run ended"
    assert max(read["stdout_eof"], read["stderr_eof"]) - exited < 5
    stderr = read["stderr"]
    assert status == 2, stderr[-3000:]  # the seq-KD tool refused its input (exit 2), and so does the recipe
    assert "would be replaced by their references" in stderr and "--max-replaced 1" in stderr
    assert [line for line in stderr.splitlines() if line.startswith("error: ")][-1].startswith(
        "error: the corpus stage failed") or "stage failed" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr
    assert not (out / "student").exists() and not (out / "cache").exists() and not (out / "seqkd" / "seqkd.json").exists()


# --------------------------------------------------------------------------------------------
# the evaluation decodes as users do and counts runaway hypotheses


def test_compare_decodes_with_translates_defaults_and_counts_runaway_hypotheses(bpe_bin, models, tmp_path):
    from pet_fairseq.evaluation.compare import build_parser as compare_parser
    from pet_fairseq.translate.cli import build_parser as translate_parser

    translate = translate_parser().parse_args(["m"])
    out = tmp_path / "compare"
    proc = tool("pet-compare", "--data-bin", str(bpe_bin), "--subset", "test", "--threads", "1", "--repeats", "1",
                "--max-sentences", "10", "--bpe", "subword_nmt", "--bpe-codes", str(bpe_bin / "bpe.code"),
                "--out-dir", str(out), str(models["narrow"]), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    quiet(proc.stderr)
    report = json.loads((out / "report.json").read_text())
    settings = report["settings"]
    assert compare_parser().parse_args(["--data-bin", "d", "m"]).max_len_b == translate.max_len_b
    for key in ("beam", "max_len_a", "max_len_b", "batch_size"):
        assert settings[key] == getattr(translate, key), key
    row = report["models"][0]
    assert row["status"] == "ok" and row["sentences"] == 50
    assert row["runaway"] == 50  # a random model never ends a sentence: every hypothesis runs to the limit


def test_study_table_counts_runaway_hypotheses_and_its_console_is_quiet(bpe_bin, models, tmp_path):
    """A one-variant study: the table has the runaway column, the learning-curve plot prints no matplotlib DEBUG
    lines, and no import-time noise reaches the console."""
    pytest.importorskip("matplotlib")
    spec = {"budget": 2, "curve_points": 1,
            "common_args": "--optimizer adam --lr 1e-3 --max-tokens 2000 --cpu --num-workers 0",
            "students": {"pet": "--arch pet_transformer --encoder-layer-plan 0,0~ --decoder-layer-plan 0,0~ "
                                + " ".join(TINY[4:])},
            "variants": [{"name": "ce", "label": "no KD", "student": "pet", "criterion": "ce"}]}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    out = tmp_path / "study"
    proc = tool("pet-study", "--spec", str(spec_path), "--data-bin", str(bpe_bin), "--teacher", str(models["narrow"]),
                "--out", str(out), "--source-lang", "de", "--target-lang", "en", "--bpe", "subword_nmt",
                "--bpe-codes", str(bpe_bin / "bpe.code"), "--threads", "1",
                "--eval-args", "--subset test --repeats 1 --max-sentences 10 --threads 1", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    quiet(proc.stdout + proc.stderr)
    assert "matplotlib" not in proc.stdout + proc.stderr and (out / "curves.png").is_file()
    table = (out / "study.md").read_text()
    header = next(line for line in table.splitlines() if "runaway hyps" in line)
    column = [cell.strip() for cell in header.split("|")].index("runaway hyps")
    rows = {cells[1]: cells[column] for cells in ([c.strip() for c in line.split("|")] for line in table.splitlines())
            if len(cells) > column and cells[1] in ("teacher", "no KD")}
    assert rows == {"teacher": "50", "no KD": "50"}, table


# --------------------------------------------------------------------------------------------
# unclear errors made clear


def test_seqkd_names_an_out_it_cannot_create(bpe_bin, models):
    try:  # /sys refuses new folders even to root, unlike a folder without write permission
        os.rmdir(tempfile.mkdtemp(dir="/sys"))
    except OSError:
        pass
    else:
        pytest.skip("/sys accepts new folders here")
    proc = tool("pet-seqkd", str(bpe_bin), "--teacher", str(models["narrow"]), "--out", "/sys/pet-seqkd-out")
    line = refused(proc, "--out /sys/pet-seqkd-out: cannot create folders in /sys", "choose a writable location for --out")
    assert ".shards" not in line


def test_seqkd_checks_its_options_before_loading_the_split(bpe_bin, models, tmp_path):
    """The split's index is damaged, so loading it would fail: the bad numbers must be reported first."""
    data = tmp_path / "data-bin"
    shutil.copytree(bpe_bin, data)
    for name in ("test.de-en.de.idx", "test.de-en.en.idx"):
        (data / name).write_bytes(b"damaged")
    before = tree(data)
    proc = tool("pet-seqkd", str(data), "--teacher", str(models["narrow"]), "--out", str(tmp_path / "out"), "--split",
                "test", "--beam", "0", "--num-shards", "0")
    refused(proc, "--num-shards must be >= 1 (got 0)", "--beam must be >= 1 (got 0)")
    quiet(proc.stderr)
    assert tree(data) == before and not (tmp_path / "out").exists()


def kd_train(data: Path, teacher: Path, save: Path, *extra: str) -> list[str]:
    return [fairseq("train"), str(data), "--user-dir", USER_DIR, "-s", "de", "-t", "en", "--task", "pet_distillation",
            "--teacher-path", str(teacher), "--criterion", "pet_kd", "--arch", "pet_transformer",
            "--encoder-layer-plan", "0,0~", "--decoder-layer-plan", "0,0~", *TINY[4:], "--inter-beta", "1",
            "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "2000", "--cpu", "--num-workers", "0", "--seed", "1",
            "--save-dir", str(save), "--no-epoch-checkpoints", "--disable-validation", *extra]


def test_resuming_kd_with_a_teacher_of_another_width_names_the_kd_projections(bpe_bin, models, tmp_path):
    save = tmp_path / "student"
    run(kd_train(bpe_bin, models["narrow"], save, "--max-update", "1"))
    before = tree(save)
    proc = subprocess.run(kd_train(bpe_bin, models["wide"], save, "--max-update", "2", "--allow-teacher-change"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "KD projections for a teacher of width 16" in last, proc.stderr[-3000:]
    assert "this run's teacher has width 32" in last and "size mismatch" not in proc.stderr
    assert tree(save) == before


def test_fairseq_train_with_a_text_file_as_teacher_is_one_line(bpe_bin, tmp_path):
    teacher = tmp_path / "teacher.pt"
    teacher.write_text("not a checkpoint\n", encoding="utf-8")
    proc = subprocess.run(kd_train(bpe_bin, teacher, tmp_path / "student", "--max-update", "1"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(teacher) in last, proc.stderr[-3000:]
    assert "weights_only" not in proc.stderr and "file an issue" not in proc.stderr
    assert teacher.read_text(encoding="utf-8") == "not a checkpoint\n"


# --------------------------------------------------------------------------------------------
# the scripts: one interpreter variable, help without an environment


def test_scripts_refuse_a_missing_environment_instead_of_another_python(tmp_path):
    """translate.sh, export.sh, train_pet.sh and data_prep/*.sh use $PET_VENV only: a missing one is one line, and a
    python3 on PATH is never run instead; the old PET_PYTHON is refused by name."""
    fake = tmp_path / "bin"
    fake.mkdir()
    marker = tmp_path / "python3-ran"
    for name in ("python3", "python"):
        (fake / name).write_text(f"#!/bin/sh\ntouch {marker}\n", encoding="utf-8")
        (fake / name).chmod(0o755)
    missing = tmp_path / "no-venv"
    path = f"{fake}:/usr/bin:/bin"
    scripts = [["scripts/translate.sh", "model.pt"], ["scripts/export.sh", "unroll", "a.pt", "b.pt"],
               ["scripts/train_pet.sh", "--data-bin", "d", "--out", "o"], ["data_prep/prepare-multi30k.sh", "--help"],
               ["data_prep/prepare-iwslt14.sh", "--help"]]
    for script, *args in scripts:
        proc = subprocess.run(["bash", str(REPO / script), *args], capture_output=True, text=True, timeout=60,
                              env={"PATH": path, "PET_VENV": str(missing), "HOME": str(tmp_path)})
        assert proc.returncode == 2 and proc.stderr == (
            f"error: no environment at {missing} (no bin/python); run: bash scripts/install.sh (or set PET_VENV)\n"), \
            (script, proc.stderr)
        assert "ModuleNotFoundError" not in proc.stderr and not marker.exists(), script
        old = subprocess.run(["bash", str(REPO / script), *args], capture_output=True, text=True, timeout=60,
                             env={"PATH": path, "PET_PYTHON": sys.executable, "HOME": str(tmp_path)})
        refused(old, "PET_PYTHON is no longer read", "set PET_VENV")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


def test_help_of_the_scripts_is_the_documentation_not_the_script_body(tmp_path):
    venv = str(Path(sys.executable).parents[1])
    for env_venv, expect in ((venv, "--student-updates N"), (str(tmp_path / "none"), "needs the environment")):
        proc = subprocess.run(["bash", str(REPO / "scripts" / "train_pet.sh"), "--help"], capture_output=True, text=True,
                              timeout=120, env={"PATH": "/usr/bin:/bin", "PET_VENV": env_venv})
        assert proc.returncode == 0 and expect in proc.stdout, proc.stdout + proc.stderr
        for body in ("set -euo", "ROOT=", "exec ", "#!", "require_env"):
            assert body not in proc.stdout, (body, proc.stdout)
        quiet(proc.stdout + proc.stderr)
    prepare = subprocess.run(["bash", str(REPO / "data_prep" / "prepare-multi30k.sh"), "--help"], capture_output=True,
                             text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PET_VENV": venv})
    assert prepare.returncode == 0 and "--bpe-merges" in prepare.stdout, prepare.stderr[-2000:]
    assert "PET_VENV" in prepare.stdout and "PYTHON=" not in prepare.stdout  # the one interpreter variable
    quiet(prepare.stdout + prepare.stderr)
