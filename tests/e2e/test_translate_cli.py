"""``scripts/translate.sh`` / ``python -m pet_fairseq.translate`` on raw text with a trained PET student.

The data-bin is the session's Multi30k slice with joint subword-nmt BPE and the recipe file the
preparation scripts write; references come from ``fairseq-generate`` (with fairseq's own
``--bpe subword_nmt --tokenizer moses`` post-processing) on the same lines, prepared with the
preparation pipeline's functions and binarized with the data-bin's dictionary.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pet_fairseq.preprocessing.bpe import SUBWORD_NMT, learn_subword_nmt, segment_lines
from pet_fairseq.preprocessing.files import read_lines
from pet_fairseq.preprocessing.recipe import RECIPE_FILE, DataRecipe
from pet_fairseq.preprocessing.text import LineProcessor, TokenizeConfig
from tests.conftest import REPO, shared_data
from tests.e2e.conftest import USER_DIR, fairseq, run

pytestmark = pytest.mark.e2e

SMALL = ["--encoder-embed-dim", "48", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "96",
         "--decoder-ffn-embed-dim", "64"]
#: the same beam, batch size and output-length limit for the translation tool and fairseq-generate
DECODE = ["--beam", "5", "--batch-size", "16", "--max-len-a", "0", "--max-len-b", "40"]
CAPITALISED = "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."


@pytest.fixture(scope="module")
def bpe_bin(multi30k_bin, tmp_path_factory) -> Path:
    """The session's tokenized, lowercased Multi30k slice with 800 joint BPE merges, binarized, with its recipe."""
    text, work = multi30k_bin.parent, tmp_path_factory.mktemp("translate_data")
    codes = work / "code"
    learn_subword_nmt([text / "train.de", text / "train.en"], codes, 800)
    for split in ("train", "valid"):
        for lang in ("de", "en"):
            (work / f"{split}.{lang}").write_text(
                "".join(line + "\n" for line in segment_lines(SUBWORD_NMT, codes, read_lines(text / f"{split}.{lang}"))),
                encoding="utf-8")
    data_bin = work / "data-bin"
    run([fairseq("preprocess"), "--source-lang", "de", "--target-lang", "en", "--joined-dictionary",
         "--trainpref", str(work / "train"), "--validpref", str(work / "valid"), "--destdir", str(data_bin),
         "--workers", "2"])
    shutil.copyfile(codes, data_bin / "bpe.code")  # as data_prep/prepare-*.sh leave it
    recipe = DataRecipe("de", "en", lowercase=True, bpe="subword_nmt", bpe_model=data_bin / "bpe.code", dataset="multi30k")
    (data_bin / RECIPE_FILE).write_text(json.dumps(recipe.to_json(data_bin)), encoding="utf-8")
    return data_bin


@pytest.fixture(scope="module")
def student(bpe_bin, tmp_path_factory) -> Path:
    """A narrow pet_iwslt_de_en (shared layers 0,1,0~,1~) after 2 updates.

    Its weights are nearly random, so its (repetitive) hypotheses differ from sentence to sentence
    and change with any difference in the prepared input; a briefly trained student says "a a a"
    to everything, which would make the comparison with fairseq-generate vacuous.
    """
    save_dir = tmp_path_factory.mktemp("translate_student")
    run([fairseq("train"), str(bpe_bin), "--user-dir", USER_DIR, "--arch", "pet_iwslt_de_en", *SMALL,
         "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "20",
         "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-tokens", "4000",
         "--max-update", "2", "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--disable-validation",
         "--seed", "1", "--cpu", "--num-workers", "0", "--no-progress-bar"])
    return save_dir / "checkpoint_last.pt"


def normal_lines() -> list[str]:
    """Raw (cased, untokenized) German sentences of Multi30k test2016, the capitalised one first."""
    return [CAPITALISED] + list(read_lines(shared_data("multi30k-de-en", "test.de")))[1:30]


def generate(data_bin: Path, checkpoint: Path, lines: list[str], work: Path) -> list[str]:
    """fairseq-generate's detokenized hypotheses (D lines) of ``lines``, prepared like the data-bin's text."""
    work.mkdir()
    tokenize = LineProcessor(TokenizeConfig(lang="de", lowercase=True))
    prepared = segment_lines(SUBWORD_NMT, data_bin / "bpe.code", (tokenize(line) for line in lines))
    (work / "input.de").write_text("".join(line + "\n" for line in prepared), encoding="utf-8")
    gen_bin = work / "bin"
    run([fairseq("preprocess"), "--source-lang", "de", "--target-lang", "en", "--only-source",
         "--srcdict", str(data_bin / "dict.de.txt"), "--testpref", str(work / "input"), "--destdir", str(gen_bin)])
    shutil.copyfile(data_bin / "dict.en.txt", gen_bin / "dict.en.txt")
    out = run([fairseq("generate"), str(gen_bin), "--user-dir", USER_DIR, "--path", str(checkpoint), "-s", "de",
               "-t", "en", "--gen-subset", "test", *DECODE, "--cpu", "--bpe", "subword_nmt",
               "--bpe-codes", str(data_bin / "bpe.code"), "--tokenizer", "moses"]).stdout
    hyps = {int(tag[2:]): text for tag, _, text in (line.split("\t") for line in out.splitlines() if line.startswith("D-"))}
    assert sorted(hyps) == list(range(len(lines)))
    return [hyps[i] for i in range(len(lines))]


def translate(model: Path, text: str, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", str(REPO / "scripts" / "translate.sh"), str(model), *DECODE, *extra],
                          input=text, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PET_VENV": str(Path(sys.executable).parents[1])})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def reference(bpe_bin, student, tmp_path_factory) -> list[str]:
    return generate(bpe_bin, student, normal_lines(), tmp_path_factory.mktemp("translate_generate") / "work")


def long_line() -> str:
    """2,000 German words (test sentences run together): well over the student's 1,024 source positions."""
    words = " ".join(read_lines(shared_data("multi30k-de-en", "test.de"))).split()
    assert len(words) >= 2000
    return " ".join(words[:2000])


def test_every_line_is_answered_and_the_long_one_truncated_with_a_warning(student, bpe_bin, reference):
    proc = translate(student, f"\n{long_line()}\n{CAPITALISED}\n", "--data-bin", str(bpe_bin))
    out = proc.stdout.split("\n")
    assert out[-1] == "" and len(out[:-1]) == 3, proc.stdout  # exactly 3 lines, newline-terminated
    assert out[0] == "" and out[1].strip()
    assert out[2] == reference[0]  # the capitalised sentence, lowercased like the training text
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: line 2: ")
    assert "more than the 1,023 the model can read: translating only the first" in warnings[0]
    notes = [line for line in proc.stderr.splitlines() if "lowercased" in line]
    assert len(notes) == 1 and "first capitals on line 2" in notes[0]


def test_output_equals_fairseq_generate_on_the_same_preprocessed_input(student, bpe_bin, reference):
    proc = translate(student, "".join(line + "\n" for line in normal_lines()), "--data-bin", str(bpe_bin))
    assert proc.stdout.splitlines() == reference
    assert len(set(reference)) >= 5  # the student says different things for different sentences


def test_a_ctranslate2_export_translates_the_same_lines(student, bpe_bin, reference, tmp_path):
    pytest.importorskip("ctranslate2")
    model_dir = tmp_path / "ct2"
    run([sys.executable, "-m", "pet_fairseq.export", "ctranslate2", str(student), str(model_dir),
         "--data-bin", str(bpe_bin)])
    proc = translate(model_dir, f"\n{long_line()}\n" + "".join(line + "\n" for line in normal_lines()))
    out = proc.stdout.splitlines()
    assert len(out) == 2 + len(reference) and out[0] == "" and out[1].strip()
    assert [line for line in proc.stderr.splitlines() if line.startswith("warning:")][0].startswith("warning: line 2: ")
    assert out[2:] == reference  # float32 CTranslate2 decodes like fairseq
    in_parts = translate(model_dir, "".join(line + "\n" for line in normal_lines()), "--threads", "2",
                         "--parallel-batches", "2")
    assert in_parts.stdout.splitlines() == reference  # two half-batches side by side, the same hypotheses
