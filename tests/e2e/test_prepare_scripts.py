"""Full runs of data_prep/prepare-*.sh on real corpora (../shared/data), then fairseq-train.

IWSLT'14's training split is not staged, so its run uses a fake ``de-en`` release whose
train.tags files are built from two of the real test-set xml files (with the tag lines of the
real release around the talks); the five xml test sets are the real ones.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pet_fairseq.preprocessing.files import read_lines
from pet_fairseq.preprocessing.pipeline import IWSLT14_TEST_SETS
from pet_fairseq.preprocessing.recipe import read_recipe

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("PET_SHARED_DATA") or REPO / ".." / "shared" / "data")
BIN = Path(sys.executable).parent


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/data not found: {path} is missing (set PET_SHARED_DATA to the staged corpora)")
    return path


def run_script(name: str, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PET_VENV": str(Path(sys.executable).parents[1])}
    proc = subprocess.run(["bash", str(REPO / "data_prep" / name), *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)
    assert proc.returncode == expect, f"{name} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def fairseq_train(data_bin: Path, workdir: Path) -> None:
    """Two updates of a tiny transformer: the data-bin must load (train and valid)."""
    cmd = [str(BIN / "fairseq-train"), str(data_bin), "--arch", "transformer_iwslt_de_en",
           "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "64",
           "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
           "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--max-tokens", "2000",
           "--max-update", "2", "--optimizer", "adam", "--lr", "1e-3", "--no-save", "--cpu",
           "--num-workers", "0", "--max-valid-steps", "2", "--log-format", "simple",
           # no prefetch thread: stopping after 2 updates while fairseq's BackgroundConsumer is still
           # collating made the interpreter abort at exit once ("terminate called without an active
           # exception", rc -6) after a complete run
           "--data-buffer-size", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "num_updates 2" in log, log[-2000:]


def line_count(path: Path) -> int:
    return sum(1 for _ in read_lines(path))


def test_multi30k_script_to_fairseq_train(tmp_path: Path) -> None:
    shared("multi30k-de-en", "train.de")
    out = tmp_path / "m30k"
    proc = run_script("prepare-multi30k.sh", "--src", "en", "--tgt", "de", "--out", str(out),
                      "--max-train-lines", "2000", "--bpe-merges", "1000")
    assert "source: local copy" in proc.stdout
    assert "train:     2,000 pairs (from 2,000 input pairs of 29,000 available" in proc.stdout
    assert "valid:     1,014 pairs" in proc.stdout and " test:     1,000 pairs" in proc.stdout
    assert re.search(r"fairseq dictionary \(joined\): [\d,]+ types", proc.stdout)
    for name in ("dict.en.txt", "dict.de.txt", "train.en-de.en.bin", "valid.en-de.de.idx", "test.en-de.en.bin"):
        assert (out / "data-bin" / name).is_file(), name
    assert next(read_lines(out / "tok" / "test.en")) == "a man in an orange hat starring at something ."
    # the recipe the translation tool reads back: next to the data-bin, with its own copy of the codes
    recipe = read_recipe(out / "data-bin")
    assert (recipe.languages, recipe.lowercase, recipe.bpe, recipe.tokenizer) == (("en", "de"), True, "subword_nmt", "moses")
    assert recipe.bpe_model == out / "data-bin" / "bpe.code"
    assert recipe.bpe_model.read_bytes() == (out / "bpe" / "code").read_bytes()
    assert f"recipe:         {out / 'data-bin' / 'preprocessing.json'}" in proc.stdout
    fairseq_train(out / "data-bin", tmp_path)

    # A second run into the same folder refuses and leaves everything as it was.
    before = (out / "data-bin" / "dict.en.txt").read_bytes()
    proc = run_script("prepare-multi30k.sh", "--src", "en", "--tgt", "de", "--out", str(out), expect=2)
    assert "already exists and is not empty" in proc.stderr and "--force" in proc.stderr
    assert (out / "data-bin" / "dict.en.txt").read_bytes() == before


def test_wmt14_script_with_extra_dev_as_train(tmp_path: Path) -> None:
    extra = shared("wmt14-en-de", "extra-dev")
    out = tmp_path / "wmt"
    proc = run_script("prepare-wmt14.sh", "--raw", str(extra), "--out", str(out), "--max-train-lines", "3000",
                      "--bpe-merges", "2000")
    assert "cleaning (train only, after BPE): 1-250 tokens, ratio 1.5" in proc.stdout
    assert line_count(out / "bpe" / "valid.de") == 3000  # newstest2013
    assert line_count(out / "bpe" / "test.en") == 3003  # newstest2014 (full)
    assert line_count(out / "tok" / "train.en") == 3000
    assert line_count(out / "bpe" / "train.en") == line_count(out / "bpe" / "train.de") <= 3000
    tokens = (out / "tok" / "test.en").read_text(encoding="utf-8")
    assert " @-@ " in tokens and "Gutach" in tokens  # aggressive hyphen splitting, case kept
    fairseq_train(out / "data-bin", tmp_path)


def _fake_train_tags(xml: Path, lang: str) -> list[str]:
    """train.tags-style lines (tag lines + talk text) from an IWSLT test-set xml file."""
    lines = []
    for line in read_lines(xml):
        stripped = line.strip()
        if stripped.startswith(("<?xml", "<mteval", "</mteval", "<srcset", "</srcset", "<refset", "</refset")):
            continue
        if "<seg id" in line:
            lines.append(re.sub(r"\s*</seg>\s*", "", re.sub(r'<seg id="\d+">\s*', "", line)))
        elif stripped.startswith("<talkid>"):
            lines += [line, "<speaker>Some Speaker</speaker>",
                      f'<reviewer href="http://www.ted.com/profiles/1">Reviewer {lang}</reviewer>',
                      f'<translator href="http://www.ted.com/profiles/2">Translator {lang}</translator>']
        else:
            lines.append(line)
    return lines


def test_iwslt14_script_on_fake_release_with_staged_codes(tmp_path: Path) -> None:
    xml_dir = shared("iwslt14-de-en", "orig-xml")
    release = tmp_path / "release" / "de-en"
    release.mkdir(parents=True)
    for name in IWSLT14_TEST_SETS:
        for lang in ("de", "en"):
            shutil.copy(xml_dir / f"{name}.de-en.{lang}.xml", release)
    for lang in ("de", "en"):
        tags = [line for name in ("IWSLT14.TED.dev2010", "IWSLT14.TED.tst2010")
                for line in _fake_train_tags(xml_dir / f"{name}.de-en.{lang}.xml", lang)]
        (release / f"train.tags.de-en.{lang}").write_text("\n".join(tags) + "\n", encoding="utf-8")
    archive = tmp_path / "de-en.tgz"  # like the download: a tgz holding de-en/
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(release, arcname="de-en")
    out = tmp_path / "iwslt"
    codes = shared("iwslt14-de-en", "bpe10k", "code")
    proc = run_script("prepare-iwslt14.sh", "--raw", str(archive), "--src", "en", "--tgt", "de",
                      "--out", str(out), "--bpe-codes", str(codes))
    assert "subword-nmt, 10,000 merges (given)" in proc.stdout

    # train + valid: the 2,452 segments plus title and description of 19 + 11 talks, minus what
    # clean-corpus-n drops; valid is every 23rd kept pair.
    n_train, n_valid = line_count(out / "tok" / "train.en"), line_count(out / "tok" / "valid.de")
    kept = n_train + n_valid
    assert n_valid == kept // 23 and 2400 < kept <= 2452 + 2 * 30
    train_text = (out / "tok" / "train.en").read_text(encoding="utf-8")
    # No tag survived (a tokenized tag would read "&lt; url &gt; ..."), nor a dropped tag line's text.
    assert "&lt;" not in train_text and "some speaker" not in train_text and "reviewer en" not in train_text
    # Titles stay as text (fairseq's sed strips only the tags).
    kept_text = train_text + (out / "tok" / "valid.en").read_text(encoding="utf-8")
    assert "wade davis : dreams from endangered cultures\n" in kept_text
    assert train_text == train_text.lower()

    # The real test split: identical to fairseq's files, tokenized and BPE'd.
    for lang in ("de", "en"):
        ours = list(read_lines(out / "tok" / f"test.{lang}"))
        assert ours == list(read_lines(shared("iwslt14-de-en", f"test.{lang}")))
        ours = list(read_lines(out / "bpe" / f"test.{lang}"))
        assert ours == list(read_lines(shared("iwslt14-de-en", "bpe10k", f"test.{lang}")))
    assert (out / "data-bin" / "test.en-de.en.bin").is_file()
    assert (out / "data-bin" / "dict.en.txt").read_bytes() == (out / "data-bin" / "dict.de.txt").read_bytes()
