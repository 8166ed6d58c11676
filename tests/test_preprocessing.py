"""pet_fairseq.preprocessing: the Python steps behind data_prep/prepare-*.sh.

Fidelity tests compare our output with files made by fairseq's Perl pipeline (staged in
../shared/data, see its SOURCES.md); they skip when that folder is absent.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from pet_fairseq.preprocessing import bpe
from pet_fairseq.preprocessing.cli import main
from pet_fairseq.preprocessing.files import PrepError, check_parallel, read_lines
from pet_fairseq.preprocessing.pipeline import IWSLT14_TEST_SETS, read_segments
from pet_fairseq.preprocessing.text import (
    CleanStats,
    LineProcessor,
    PerlMosesTokenizer,
    TokenizeConfig,
    clean_pairs,
    clean_reason,
    extract_segment,
    is_every_nth,
    perl_lowercase,
    split_every_nth,
    strip_train_tags,
)

SHARED = Path(os.environ.get("PET_SHARED_DATA") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data")

# Share of identical lines measured against the Perl-made files (tokenizer.perl + lowercase.perl):
# 6750/6750 for both languages once the last-word period rule of tokenizer.perl is reproduced
# (plain sacremoses gives 99.76% de / 99.78% en).
TOKENIZATION_FIDELITY = {"de": 1.0, "en": 1.0}


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/data not found: {path} is missing (set PET_SHARED_DATA to the staged corpora)")
    return path


def identical_share(ours: list[str], reference: list[str]) -> float:
    assert len(ours) == len(reference)
    return sum(a == b for a, b in zip(ours, reference)) / len(reference)


# ----------------------------------------------------------------------------- clean-corpus-n


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


@pytest.mark.parametrize(
    ("n_src", "n_tgt", "reason"),
    [
        (175, 175, None),  # max length is inclusive
        (176, 176, "too_long"),
        (175, 176, "too_long"),
        (3, 2, None),  # ratio exactly 1.5 is kept
        (2, 3, None),
        (4, 2, "ratio"),
        (2, 4, "ratio"),
        (20, 30, None),
        (20, 31, "ratio"),
        (1, 1, None),
        (0, 1, "empty"),
        (1, 0, "empty"),
    ],
)
def test_clean_reason_length_and_ratio_boundaries(n_src: int, n_tgt: int, reason: str | None) -> None:
    assert clean_reason(words(n_src), words(n_tgt), 1, 175, 1.5) == reason


def test_clean_min_length_and_order_of_checks() -> None:
    assert clean_reason("a", "b c", 2, 175, 9) == "too_short"
    # clean-corpus-n checks the maximum before the ratio: a 200-vs-2 pair is "too_long".
    assert clean_reason(words(200), "a b", 1, 175, 1.5) == "too_long"


def test_clean_pairs_normalises_whitespace_and_counts_drops() -> None:
    pairs = [
        ("  ein   kleiner\tTest ", "a  small test"),
        ("", "orphan target"),
        ("   ", "whitespace-only source"),
        ("eins zwei drei vier", "one"),
        ("a | b", "a b"),
    ]
    stats = CleanStats()
    kept = list(clean_pairs(pairs, 1, 175, 1.5, stats))
    assert kept == [("ein kleiner Test", "a small test"), ("a b", "a b")]
    assert stats.seen == 5 and stats.kept == 2 and stats.dropped_total == 3
    assert dict(stats.dropped) == {"empty": 2, "ratio": 1}


# ----------------------------------------------------------------------------- split and XML


def test_every_23rd_line_is_valid_like_awk_nr() -> None:
    lines = [f"line {n}" for n in range(1, 101)]  # awk's NR = n
    train, valid = split_every_nth(lines, 23)
    assert valid == ["line 23", "line 46", "line 69", "line 92"]
    assert len(train) == 96 and "line 22" in train and "line 24" in train and "line 23" not in train
    assert [is_every_nth(i, 23) for i in (21, 22, 23, 45)] == [False, True, False, True]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("<url>http://www.ted.com/talks/x.html</url>", None),
        ("<talkid>1</talkid>", None),
        ("<keywords>talks, science</keywords>", None),
        ("<speaker>Al Gore</speaker>", None),
        ('<reviewer href="http://www.ted.com/profiles/1">Jane</reviewer>', None),
        ('<translator href="http://www.ted.com/profiles/2">Max</translator>', None),
        ('<doc docid="535" genre="lectures">', None),
        ("</doc>", None),
        ("<title>Al Gore: Averting the climate crisis</title>", "Al Gore: Averting the climate crisis"),
        ("<description>TED Talk Subtitles and Transcript: hi</description>", "TED Talk Subtitles and Transcript: hi"),
        ("  Thank you so much, Chris.  ", "Thank you so much, Chris."),
        ("No tags here.", "No tags here."),
    ],
)
def test_strip_train_tags(line: str, expected: str | None) -> None:
    assert strip_train_tags(line) == expected


def test_extract_segment_follows_fairseqs_sed() -> None:
    assert extract_segment('<seg id="12">  Das ist Amerikas ’Traum’. </seg>') == "Das ist Amerikas 'Traum'."
    assert extract_segment('<seg id="3">x</seg>  ') == "x"
    assert extract_segment("<title>Not a segment</title>") is None
    assert extract_segment('<doc docid="1" genre="lectures">') is None


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_matches_tokenizer_perl_rules() -> None:
    en, de = PerlMosesTokenizer("en"), PerlMosesTokenizer("de")
    # tokenizer.perl always splits the period off the last word; sacremoses alone does not.
    assert en.tokenize_line("But those are all the roads in the U.S.") == "But those are all the roads in the U.S ."
    assert en.tokenize_line("The U.S. are big.") == "The U.S. are big ."
    assert de.tokenize_line("wie in den vorhergegangenen 75.") == "wie in den vorhergegangenen 75 ."
    assert en.tokenize_line('He said "it\'s 5 & 6 [sic]".') == (
        "He said &quot; it &apos;s 5 &amp; 6 &#91; sic &#93; &quot; ."
    )
    assert en.tokenize_line("a mother-in-law", aggressive=True) == "a mother @-@ in @-@ law"
    assert en.tokenize_line("   ") == "   "  # whitespace-only lines pass through like in the Perl


def test_lowercase_like_perl_lc() -> None:
    assert perl_lowercase("Zwei MÄNNER &apos;S") == "zwei männer &apos;s"
    assert perl_lowercase("ΟΔΟΣ ΣΑΣ") == "οδοσ σασ"  # Python's str.lower() would give "οδος σας"


def test_line_processor_wmt_train_normalisation() -> None:
    proc = LineProcessor(TokenizeConfig("en", aggressive=True, normalize_punct=True, remove_non_printing=True))
    assert proc("«Hello»\u200bworld – well-known") == "&quot; Hello &quot; world - well @-@ known"
    assert LineProcessor(TokenizeConfig("de", lowercase=True))("Zwei Männer.") == "zwei männer ."


def test_tokenization_reproduces_fairseq_iwslt14_test() -> None:
    """Raw IWSLT'14 xml -> our steps == fairseq's tokenized, lowercased test.{de,en}."""
    xml = shared("iwslt14-de-en", "orig-xml")
    for lang, minimum in TOKENIZATION_FIDELITY.items():
        proc = LineProcessor(TokenizeConfig(lang, lowercase=True))
        ours = [proc(line) for name in IWSLT14_TEST_SETS for line in read_segments(xml / f"{name}.de-en.{lang}.xml")]
        reference = list(read_lines(shared("iwslt14-de-en", f"test.{lang}")))
        share = identical_share(ours, reference)
        assert share >= minimum, f"{lang}: {share:.4%} identical lines"


# ----------------------------------------------------------------------------- BPE


@pytest.mark.parametrize("split", ["valid", "test"])
def test_staged_bpe_codes_reproduce_fairseq_bpe_exactly(split: str) -> None:
    codes = shared("iwslt14-de-en", "bpe10k", "code")
    assert bpe.count_merges(codes) == 10_000
    for lang in ("de", "en"):
        ours = list(bpe.segment_lines(bpe.SUBWORD_NMT, codes, read_lines(shared("iwslt14-de-en", f"{split}.{lang}"))))
        reference = list(read_lines(shared("iwslt14-de-en", "bpe10k", f"{split}.{lang}")))
        assert identical_share(ours, reference) == 1.0


def _multi30k_sample(tmp_path: Path, n: int) -> list[Path]:
    proc = {lang: LineProcessor(TokenizeConfig(lang, lowercase=True)) for lang in ("de", "en")}
    paths = []
    for lang in ("de", "en"):
        lines = [proc[lang](x) for _, x in zip(range(n), read_lines(shared("multi30k-de-en", f"train.{lang}")))]
        path = tmp_path / f"train.{lang}"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def test_learn_and_apply_subword_nmt_round_trip(tmp_path: Path) -> None:
    train = _multi30k_sample(tmp_path, 1000)
    codes = tmp_path / "code"
    assert bpe.learn_subword_nmt(train, codes, 300, workers=1) == 300
    original = list(read_lines(train[0]))
    segmented = list(bpe.segment_lines(bpe.SUBWORD_NMT, codes, iter(original)))
    assert any("@@ " in line for line in segmented)
    assert [line.replace("@@ ", "") for line in segmented] == original


def test_sentencepiece_round_trip(tmp_path: Path) -> None:
    train = _multi30k_sample(tmp_path, 1000)
    model = bpe.train_sentencepiece(train, tmp_path / "spm", 400, "bpe", workers=1)
    assert bpe.sentencepiece_vocab_size(model) == 400
    original = list(read_lines(train[1]))[:50]
    pieces = list(bpe.segment_lines(bpe.SENTENCEPIECE, model, iter(original)))
    assert all(p.startswith("▁") for p in pieces)
    assert ["".join(p.split()).replace("▁", " ").strip() for p in pieces] == original


def test_bad_bpe_codes_file_is_rejected(tmp_path: Path) -> None:
    codes = tmp_path / "code"
    codes.write_text("#version: 0.2\na b\nnot a merge line\n", encoding="utf-8")
    with pytest.raises(PrepError, match=r"line 3 is not a subword-nmt merge"):
        bpe.check_codes(codes, bpe.SUBWORD_NMT)


# ----------------------------------------------------------------------------- CLI runs and errors


def _raw_multi30k(tmp_path: Path, n: int = 300) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    for split, source, count in (("train", "train", n), ("val", "val", 60), ("test", "test", 60)):
        for lang in ("de", "en"):
            lines = [x for _, x in zip(range(count), read_lines(shared("multi30k-de-en", f"{source}.{lang}")))]
            (raw / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return raw


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_multi30k_text_steps_stats_and_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw, out = _raw_multi30k(tmp_path), tmp_path / "out"
    with open(raw / "train.de", "a", encoding="utf-8") as handle:
        handle.write("\n")  # an empty German line paired with ...
    with open(raw / "train.en", "a", encoding="utf-8") as handle:
        handle.write("An orphan English line.\n")  # ... an English one: cleaning drops and counts it
    argv = ["multi30k", "--raw", str(raw), "--out", str(out), "--bpe-merges", "200", "--workers", "1"]
    code, stdout, _ = _run(argv, capsys)
    assert code == 0, stdout
    stats = json.loads((out / "prep_stats.json").read_text(encoding="utf-8"))
    assert stats["splits"]["train"]["input_pairs"] == 301
    assert stats["splits"]["train"]["clean"] == {"seen": 301, "kept": 300, "dropped": {"empty": 1}}
    assert [stats["splits"][s]["pairs"] for s in ("train", "valid", "test")] == [300, 60, 60]
    assert stats["bpe"]["merges"] == 200
    first = next(read_lines(out / "tok" / "train.en"))
    assert first == "two young , white males are outside near many bushes ."
    assert (out / "bpe" / "code").is_file() and not (out / "tmp").exists()

    code, stdout, _ = _run(["summary", str(out)], capsys)
    assert code == 0
    assert "train:       300 pairs (from 301 input pairs); dropped by cleaning: 1 (empty 1)" in stdout
    assert "fairseq-preprocess not run" in stdout

    marker = out / "bpe" / "train.de"
    before = marker.read_bytes()
    code, _, stderr = _run(argv, capsys)
    assert code == 2
    assert f"output folder {out} already exists and is not empty" in stderr and "--force" in stderr
    assert marker.read_bytes() == before

    code, _, _ = _run(argv + ["--force", "--no-lowercase", "--max-train-lines", "100"], capsys)
    assert code == 0
    assert next(read_lines(out / "tok" / "train.en")) == "Two young , White males are outside near many bushes ."
    assert json.loads((out / "prep_stats.json").read_text())["splits"]["train"]["pairs"] == 100


def test_mismatched_line_counts_name_both_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = _raw_multi30k(tmp_path)
    lines = (raw / "val.en").read_text(encoding="utf-8").splitlines()[:-1]
    (raw / "val.en").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    code, _, stderr = _run(["multi30k", "--raw", str(raw), "--out", str(out), "--bpe-merges", "50"], capsys)
    assert code == 2
    assert f"{raw / 'val.de'} has 60 lines, {raw / 'val.en'} has 59" in stderr
    assert not out.exists(), "a failed run must not leave a half-written output folder"


def test_invalid_utf8_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, tgt = tmp_path / "c.en", tmp_path / "c.de"
    src.write_bytes(b"fine\nstill fine\ncaf\xe9 au lait\n")
    tgt.write_text("gut\nimmer noch gut\nMilchkaffee\n", encoding="utf-8")
    with pytest.raises(PrepError, match=r"c\.en: line 3 is not valid UTF-8"):
        check_parallel(src, tgt)
    code, _, stderr = _run(["wmt14", "--train-src", str(src), "--train-tgt", str(tgt),
                            "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and f"{src}: line 3 is not valid UTF-8" in stderr and "iconv" in stderr


def test_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nowhere.en"
    (tmp_path / "nowhere.de").write_text("x\n", encoding="utf-8")
    code, _, stderr = _run(["wmt14", "--train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and f"training file not found: {missing}" in stderr
    code, _, stderr = _run(["iwslt14", "--raw", str(tmp_path), "--out", str(tmp_path / "out2")], capsys)
    assert code == 2 and "train.tags.de-en.de not found under" in stderr and "--raw PATH" in stderr
    assert not (tmp_path / "out2").exists()


def test_unknown_language_pair(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for src, tgt in (("fr", "en"), ("de", "de")):
        code, _, stderr = _run(["multi30k", "--src", src, "--tgt", tgt, "--out", str(tmp_path / "o")], capsys)
        assert code == 2
        assert f"unknown language pair {src}-{tgt} for multi30k" in stderr and "--src en --tgt de" in stderr
    assert not (tmp_path / "o").exists()


def test_iwslt_download_failure_explains_raw(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from pet_fairseq.preprocessing import pipeline

    monkeypatch.setattr(pipeline, "download", lambda url, dest, timeout=30.0: None)
    code, _, stderr = _run(["iwslt14", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "could not download" in stderr and "--raw PATH/de-en.tgz" in stderr


def test_gzipped_raw_input(tmp_path: Path) -> None:
    path = tmp_path / "x.de.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("eins\nzwei\n")
    assert list(read_lines(path)) == ["eins", "zwei"]


def test_multi30k_sentencepiece_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw, out = _raw_multi30k(tmp_path), tmp_path / "out"
    code, stdout, stderr = _run(["multi30k", "--raw", str(raw), "--out", str(out), "--bpe", "sentencepiece",
                                 "--vocab-size", "300", "--workers", "1"], capsys)
    assert code == 0, stderr
    stats = json.loads((out / "prep_stats.json").read_text(encoding="utf-8"))
    assert stats["bpe"]["method"] == "sentencepiece" and stats["bpe"]["vocab_size"] == 300
    assert (out / "bpe" / "spm.model").is_file()
    first = next(read_lines(out / "bpe" / "valid.en"))
    assert first.startswith("▁") and "".join(first.split()).replace("▁", " ").strip() == next(
        read_lines(out / "tok" / "valid.en"))


def test_subword_option_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, stderr = _run(["multi30k", "--vocab-size", "100", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--vocab-size applies to --bpe sentencepiece" in stderr
    code, _, stderr = _run(["multi30k", "--bpe", "sentencepiece", "--bpe-merges", "100", "--out", str(tmp_path / "o")],
                           capsys)
    assert code == 2 and "--bpe-merges applies to --bpe subword-nmt" in stderr


def test_misaligned_train_tags_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    release = tmp_path / "de-en"
    release.mkdir()
    (release / "train.tags.de-en.de").write_text("<url>u</url>\nHallo Welt.\n", encoding="utf-8")
    (release / "train.tags.de-en.en").write_text("<url>u</url>\nHello world.\nAn extra line.\n", encoding="utf-8")
    for name in IWSLT14_TEST_SETS:
        for lang in ("de", "en"):
            (release / f"{name}.de-en.{lang}.xml").write_text('<seg id="1"> x </seg>\n', encoding="utf-8")
    code, _, stderr = _run(["iwslt14", "--raw", str(tmp_path), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert (f"{release / 'train.tags.de-en.de'} has 1 lines after stripping the tag lines, "
            f"{release / 'train.tags.de-en.en'} has 2") in stderr
    (release / f"{IWSLT14_TEST_SETS[-1]}.de-en.en.xml").unlink()
    code, _, stderr = _run(["iwslt14", "--raw", str(tmp_path), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and f"IWSLT'14 test-set file not found: {release / IWSLT14_TEST_SETS[-1]}.de-en.en.xml" in stderr


def test_negative_bpe_merges_and_empty_raw_files_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A negative --bpe-merges and raw files without a sentence pair are one error line each."""
    raw = _raw_multi30k(tmp_path, n=50)
    before = {p.name: p.read_bytes() for p in raw.iterdir()}
    code, _, stderr = _run(["multi30k", "--raw", str(raw), "--out", str(tmp_path / "e"), "--bpe-merges", "-5"], capsys)
    assert code == 2 and stderr.splitlines()[-1] == "error: --bpe-merges must be at least 1, got -5."
    empty = tmp_path / "rawempty"
    empty.mkdir()
    for split in ("train", "val", "test"):
        for lang in ("de", "en"):
            (empty / f"{split}.{lang}").write_bytes(b"")
    code, _, stderr = _run(["multi30k", "--raw", str(empty), "--out", str(tmp_path / "i"), "--bpe-merges", "300",
                            "--workers", "1"], capsys)
    assert code == 2 and "Traceback" not in stderr
    assert stderr.splitlines()[-1] == (
        f"error: no training sentence pairs: the training files (folder {empty}) hold 0 pairs; pass training files "
        "that hold text (one sentence per line, both sides aligned).")
    assert not (tmp_path / "e").exists() and not (tmp_path / "i").exists()
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == before
    assert all(p.read_bytes() == b"" for p in empty.iterdir())
