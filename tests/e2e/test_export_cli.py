"""Export end to end: a trained student, unrolled and converted, decodes like the student on real sentences."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import USER_DIR, fairseq, run

pytestmark = pytest.mark.e2e

SMALL = ["--encoder-embed-dim", "48", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "96",
         "--decoder-ffn-embed-dim", "64"]
#: fairseq 0.12 without the plugin drops a last partial batch; --required-batch-size-multiple 1 keeps all 100
DECODE = ["--gen-subset", "test", "--beam", "5", "--batch-size", "50", "--required-batch-size-multiple", "1",
          "--max-len-a", "1.2", "--max-len-b", "10", "--cpu"]
LIMITS = ["--max-len-a", "1.2", "--max-len-b", "10"]


def export(*args: str) -> str:
    return run([sys.executable, "-m", "pet_fairseq.export", *args]).stderr


@pytest.fixture(scope="module")
def student(multi30k_bin, tmp_path_factory) -> Path:
    """60 small updates of a narrow pet_iwslt_de_en (0,1,0~,1~ both sides, shared cross-attention query)."""
    save_dir = tmp_path_factory.mktemp("export_student")
    run([fairseq("train"), str(multi30k_bin), "--user-dir", USER_DIR, "--arch", "pet_iwslt_de_en", *SMALL,
         "--optimizer", "adam", "--lr", "1e-2", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "10",
         "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-tokens", "1500",
         "--max-update", "60", "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--disable-validation",
         "--seed", "1", "--cpu", "--num-workers", "0", "--no-progress-bar"])
    return save_dir / "checkpoint_last.pt"


def generate(data: Path, checkpoint: Path, *extra: str) -> dict[int, tuple[float, str, list[float]]]:
    """fairseq-generate's top hypotheses: id -> (score in bits, tokens, positional scores)."""
    out = run([fairseq("generate"), str(data), "--path", str(checkpoint), *DECODE, *extra]).stdout
    hyps, positional = {}, {}
    for line in out.splitlines():
        tag, _, rest = line.partition("\t")
        if tag.startswith("H-"):
            score, _, text = rest.partition("\t")
            hyps[int(tag[2:])] = (float(score), text)
        elif tag.startswith("P-"):
            positional[int(tag[2:])] = [float(x) for x in rest.split()]
    return {i: (score, text, positional[i]) for i, (score, text) in hyps.items()}


@pytest.fixture(scope="module")
def unrolled(student, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export_unrolled") / "student.transformer.pt"
    log = export("unroll", str(student), str(out))
    assert "0,1,0~,1~" in log and "-> transformer with 4+4 layers" in log
    return out


@pytest.fixture(scope="module")
def fairseq_hypotheses(student, multi30k_bin):
    return generate(multi30k_bin, student, "--user-dir", USER_DIR)


def test_plain_fairseq_decodes_the_unrolled_checkpoint_like_the_student(unrolled, fairseq_hypotheses, multi30k_bin):
    plain = generate(multi30k_bin, unrolled)  # no --user-dir: fairseq's own transformer
    assert sorted(plain) == sorted(fairseq_hypotheses) == list(range(100))
    # 60 updates of a 48/32-wide model mostly say "a a a a": the per-token scores, which every weight
    # (a missed Q/K swap, a wrong cross-attention query) changes, carry the comparison
    assert all(text.strip() for _, text, _ in fairseq_hypotheses.values())
    for i, (score, text, positional) in fairseq_hypotheses.items():
        assert plain[i][1] == text, i
        assert abs(plain[i][0] - score) < 1e-4, i
        assert len(plain[i][2]) == len(positional)
        assert max(abs(a - b) for a, b in zip(plain[i][2], positional)) < 1e-4, i


@pytest.fixture(scope="module")
def ct2_models(student, multi30k_bin, tmp_path_factory):
    pytest.importorskip("ctranslate2", reason="ctranslate2 is an optional extra: pip install -e .[ctranslate2]")
    root = tmp_path_factory.mktemp("export_ct2")
    for quantization in ("float32", "int8"):
        export("ctranslate2", str(student), str(root / quantization), "--quantization", quantization,
               "--data-bin", str(multi30k_bin))
    return root


def test_ctranslate2_float32_gives_fairseqs_hypotheses(ct2_models, fairseq_hypotheses, multi30k_bin, tmp_path):
    from pet_fairseq.core.ctranslate2 import decoding
    from pet_fairseq.core.ctranslate2.subset import read_subset

    sources, _ = read_subset(multi30k_bin, "test", "de", "en")
    hyp_file = tmp_path / "ct2.float32.txt"
    export("translate", str(ct2_models / "float32"), "--data-bin", str(multi30k_bin), "--subset", "test",
           "--tokenizer", "none", "--output", str(hyp_file), *LIMITS)
    ct2 = hyp_file.read_text(encoding="utf-8").split("\n")[:-1]
    expected = [fairseq_hypotheses[i][1] for i in range(100)]
    same = sum(a == b for a, b in zip(ct2, expected))
    assert len(ct2) == 100 and same >= 98, [(a, b) for a, b in zip(ct2, expected) if a != b]

    # a text file (tokenized like the data) decodes like the binarized subset
    text_in, text_out = tmp_path / "first.de", tmp_path / "first.en"
    text_in.write_text("".join(" ".join(s) + "\n" for s in sources[:5]), encoding="utf-8")
    export("translate", str(ct2_models / "float32"), "--input", str(text_in), "--output", str(text_out),
           "--tokenizer", "none", *LIMITS)
    assert text_out.read_text(encoding="utf-8").splitlines() == ct2[:5]

    # the same function: CTranslate2's log-probabilities of fairseq's hypotheses (EOS included) equal
    # fairseq's positional scores (P- lines, bits, printed to 4 decimals) token by token. (Beam-search
    # *scores* are not compared: CTranslate2 normalizes the final score its own way, ~1% off fairseq's.)
    translator = decoding.load_translator(str(ct2_models / "float32"), threads=1)
    targets = [fairseq_hypotheses[i][1].split() for i in range(100)]
    for i, result in enumerate(translator.score_batch(sources, targets)):
        positional = fairseq_hypotheses[i][2]
        assert len(result.log_probs) == len(positional) == len(targets[i]) + 1
        assert max(abs(lp / math.log(2) - p) for lp, p in zip(result.log_probs, positional)) < 2e-4, i


def test_ctranslate2_int8_translates_and_reports_bleu(ct2_models, multi30k_bin, tmp_path):
    from pet_fairseq.core.ctranslate2.model_dir import directory_bytes

    log = export("translate", str(ct2_models / "int8"), "--data-bin", str(multi30k_bin),
                 "--output", str(tmp_path / "int8.txt"), *LIMITS)
    assert re.search(r"BLEU \(sacrebleu detok\) = \d+\.\d\d", log), log[-2000:]
    assert len((tmp_path / "int8.txt").read_text(encoding="utf-8").splitlines()) == 100
    assert directory_bytes(ct2_models / "int8") < 0.5 * directory_bytes(ct2_models / "float32")


def test_compare_puts_the_ctranslate2_model_beside_the_fairseq_student(student, ct2_models, multi30k_bin, tmp_path):
    from pet_fairseq.core.ctranslate2.model_dir import count_parameters, directory_bytes

    out = tmp_path / "compare"
    proc = run([sys.executable, "-m", "pet_fairseq.evaluation.compare", "--data-bin", str(multi30k_bin),
                "--threads", "1", "--batch-size", "32", *LIMITS, "--repeats", "1", "--max-sentences", "40",
                "--labels", "student,student-ct2-int8", "--out-dir", str(out), str(student), str(ct2_models / "int8")])
    report = json.loads((out / "report.json").read_text())
    fairseq_row, ct2_row = report["models"]
    assert fairseq_row["status"] == ct2_row["status"] == "ok", proc.stderr[-3000:]
    assert "| student-ct2-int8 |" in proc.stdout
    memory = ct2_row["memory"]
    assert memory["unique_parameters"] == count_parameters(ct2_models / "int8")
    assert memory["inference_checkpoint_bytes"] == directory_bytes(ct2_models / "int8")
    assert memory["peak_rss_bytes"] < fairseq_row["memory"]["peak_rss_bytes"]  # no torch in the CT2 process
    assert ct2_row["speed"]["sentences"] == 40 and ct2_row["speed"]["tokens_per_second"] > 0
    assert ct2_row["sentences"] == 100 and ct2_row["ratios"]["tokens_per_second"] > 0
    assert abs(ct2_row["bleu"]["detok"] - fairseq_row["bleu"]["detok"]) < 5  # int8: close, not identical
    hyps = Path(ct2_row["files"]["hyp_detok"]).read_text(encoding="utf-8").splitlines()
    assert len(hyps) == 100 and sum(bool(h.strip()) for h in hyps) > 90


def test_a_shortlist_from_the_training_bitext_travels_with_the_model_into_every_tool(student, ct2_models, multi30k_bin,
                                                                                    tmp_path):
    vmap = tmp_path / "train.vmap"
    log = export("shortlist", str(vmap), "--data-bin", str(multi30k_bin), "--source-lang", "de", "--target-lang", "en")
    assert "shortlist from 3,000 sentence pairs: 100 always-included target tokens" in log, log[-2000:]
    model = tmp_path / "int8-shortlist"
    export("ctranslate2", str(student), str(model), "--quantization", "int8", "--data-bin", str(multi30k_bin),
           "--vocab-shortlist", str(vmap))
    assert (model / "vmap.txt").read_text(encoding="utf-8") == vmap.read_text(encoding="utf-8")
    scores = {}
    for name, directory, extra in (("shortlist", model, []), ("whole", model, ["--no-shortlist"]),
                                   ("plain", ct2_models / "int8", []),
                                   ("plain-in-parts", ct2_models / "int8", ["--threads", "2", "--parallel-batches", "2"])):
        log = export("translate", str(directory), "--data-bin", str(multi30k_bin), "--output",
                     str(tmp_path / f"{name}.txt"), *LIMITS, *extra)
        assert ("with the model's vocabulary shortlist" in log) == (name == "shortlist"), log[-2000:]
        scores[name] = float(re.search(r"BLEU \(sacrebleu detok\) = (\d+\.\d+)", log).group(1))
    assert (tmp_path / "whole.txt").read_text() == (tmp_path / "plain.txt").read_text()
    assert (tmp_path / "plain-in-parts.txt").read_text() == (tmp_path / "plain.txt").read_text()
    assert scores["whole"] == scores["plain"] and abs(scores["shortlist"] - scores["plain"]) <= 1.0
    out = tmp_path / "compare"
    run([sys.executable, "-m", "pet_fairseq.evaluation.compare", "--data-bin", str(multi30k_bin), "--threads", "2",
         "--ct2-parallel-batches", "2",
         "--batch-size", "32", *LIMITS, "--repeats", "1", "--max-sentences", "20", "--labels", "plain,shortlist",
         "--out-dir", str(out), str(ct2_models / "int8"), str(model)])
    plain_row, shortlist_row = json.loads((out / "report.json").read_text())["models"]
    assert (plain_row["backend"], shortlist_row["backend"]) == ("ctranslate2", "ctranslate2+shortlist")
    # two parallel batches: the same hypotheses without a shortlist; with one, each half-batch gets its own
    # candidate union, so the shortlisted output may differ a little from whole-batch decoding
    assert plain_row["bleu"]["detok"] == pytest.approx(scores["plain"], abs=0.01)
    assert abs(shortlist_row["bleu"]["detok"] - scores["plain"]) <= 1.0


# --------------------------------------------------------------------------------------------
# the unrolled checkpoint in stock fairseq, the plugin not importable (issue 25)

#: runs fairseq-generate's own entry point (what the ``fairseq-generate`` script calls) with ``pet_fairseq``
#: made unimportable, then reports whether the plugin or its batching fix was loaded after all
WITHOUT_PLUGIN = """
import sys
class NoPlugin:
    def find_spec(self, name, path=None, target=None):
        if name == "pet_fairseq" or name.startswith("pet_fairseq."):
            raise ModuleNotFoundError(f"{name} is blocked: this run must not use the plugin")
        return None
sys.meta_path.insert(0, NoPlugin())
from fairseq_cli.generate import cli_main
sys.argv = ["fairseq-generate", *sys.argv[1:]]
try:
    cli_main()
finally:
    from fairseq.data import data_utils
    patched = getattr(data_utils.batch_by_size, "_pet_keeps_last_batch", False)
    print(f"plugin imported: {'pet_fairseq' in sys.modules}, last batch kept by the plugin: {patched}", file=sys.stderr)
"""


def without_pythonpath() -> dict[str, str]:
    """This process's environment without PYTHONPATH (which could put the repository on the import path)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def generate_without_plugin(data: Path, checkpoint: Path, cwd: Path, *extra: str) -> list[int]:
    """Sentence ids fairseq-generate printed a hypothesis for, run from ``cwd`` in a process without the plugin."""
    proc = subprocess.run([sys.executable, "-c", WITHOUT_PLUGIN, str(data), "--path", str(checkpoint), "--gen-subset",
                           "test", "--beam", "2", "--max-len-b", "5", "--cpu", *extra],
                          cwd=cwd, env={**without_pythonpath(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "plugin imported: False, last batch kept by the plugin: False" in proc.stderr
    return sorted(int(line.split("\t")[0][2:]) for line in proc.stdout.splitlines() if line.startswith("H-"))


def test_an_unrolled_student_decodes_every_sentence_in_stock_fairseq_with_the_documented_option(tmp_path):
    """fairseq-generate without the plugin on an unrolled student: every one of 100 test sentences with
    ``--required-batch-size-multiple 1`` (what the export docs and the unroll log tell users to pass).

    The plugin must not be importable in that process. Running from a folder outside the repository
    without PYTHONPATH is not enough: ``pip install -e .`` puts a finder for ``pet_fairseq`` on every
    interpreter's ``sys.meta_path`` (in this venv ``importlib.util.find_spec("pet_fairseq")`` finds the
    repository from any folder), so the process puts a finder in front of it that refuses ``pet_fairseq``,
    and reports that neither the plugin nor its last-batch fix got loaded.

    Without the option fairseq 0.12 translates 96 of the 100 (fairseq issue #5036: a last batch whose
    size is not a multiple of 8 is dropped), also when the checkpoint stores
    ``dataset.required_batch_size_multiple = 1``: fairseq-generate batches with its command-line options
    only, so nothing stored in the checkpoint can fix it, and the unroll log names the option instead.
    """
    import torch
    from fairseq.data import indexed_dataset

    from tests.conftest import make_checkpoint, toy_dictionary, write_data_dir

    dictionary = toy_dictionary(40)
    data = write_data_dir(tmp_path / "data-bin", dictionary)
    g = torch.Generator().manual_seed(0)
    for lang in ("de", "en"):
        builder = indexed_dataset.make_builder(str(data / f"test.de-en.{lang}.bin"), impl="mmap",
                                               vocab_size=len(dictionary))
        for _ in range(100):
            length = int(torch.randint(2, 9, (1,), generator=g))
            words = " ".join(f"w{int(i)}" for i in torch.randint(0, 40, (length,), generator=g))
            builder.add_item(dictionary.encode_line(words, add_if_not_exist=False))
        builder.finalize(str(data / f"test.de-en.{lang}.idx"))
    student, _, _ = make_checkpoint(tmp_path / "student.pt", data, "pet_iwslt_de_en", *SMALL, seed=4)
    unrolled = tmp_path / "student.transformer.pt"
    log = export("unroll", str(student), str(unrolled))
    assert ("plain fairseq-generate (no --user-dir) needs --required-batch-size-multiple 1 with it: otherwise fairseq "
            "0.12 drops the last batch when its size is not a multiple of 8 (fairseq issue #5036)") in log
    stored = tmp_path / "student.stored-multiple.pt"
    state = torch.load(unrolled)
    state["cfg"]["dataset"]["required_batch_size_multiple"] = 1
    torch.save(state, stored)

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    assert generate_without_plugin(data, unrolled, cwd, "--required-batch-size-multiple", "1") == list(range(100))
    for checkpoint in (unrolled, stored):
        dropped = generate_without_plugin(data, checkpoint, cwd)
        assert len(dropped) == 96 and set(dropped) < set(range(100))
