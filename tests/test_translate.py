"""pet_fairseq.translate and the data-bin recipe: preparation, every line answered, clear errors."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Callable

import pytest
import torch

from pet_fairseq.preprocessing.bpe import SUBWORD_NMT, SubwordNmtSegmenter, learn_subword_nmt
from pet_fairseq.preprocessing.files import PrepError
from pet_fairseq.preprocessing.recipe import RECIPE_FILE, DataRecipe, read_recipe, write_recipe
from pet_fairseq.preprocessing.text import LineProcessor, TokenizeConfig
from pet_fairseq.translate import LineTranslator, SourceText, TargetText, TranslateError
from pet_fairseq.translate.cli import main, read_lines, translate_stream
from pet_fairseq.translate.text import truncate

GERMAN = ["ein mann fährt mit dem fahrrad durch die stadt .", "zwei hunde spielen im schnee .",
          "eine frau liest ein buch im park .", "kinder spielen fußball auf der straße ."] * 5


@pytest.fixture(scope="module")
def codes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bpe")
    (folder / "train.de").write_text("\n".join(GERMAN) + "\n", encoding="utf-8")
    (folder / "train.en").write_text("a man rides a bike .\ntwo dogs play in the snow .\n" * 10, encoding="utf-8")
    learn_subword_nmt([folder / "train.de", folder / "train.en"], folder / "code", 40)
    return folder / "code"


@pytest.fixture()
def recipe(codes) -> DataRecipe:
    return DataRecipe("de", "en", lowercase=True, bpe="subword_nmt", bpe_model=codes)


# --- the recipe file ------------------------------------------------------------------------------


def fake_preparation(out: Path, codes: Path) -> None:
    """What the text steps and fairseq-preprocess leave in OUT for multi30k de->en."""
    (out / "bpe").mkdir(parents=True)
    (out / "bpe" / "code").write_bytes(codes.read_bytes())
    (out / "data-bin").mkdir()
    for lang in ("de", "en"):
        (out / "data-bin" / f"dict.{lang}.txt").write_text("a 1\n", encoding="utf-8")
    stats = {"dataset": "multi30k", "src": "de", "tgt": "en", "lowercase": True,
             "bpe": {"method": SUBWORD_NMT, "model": "relative/path/at/run/time/bpe/code", "merges": 40, "given": False}}
    (out / "prep_stats.json").write_text(json.dumps(stats), encoding="utf-8")


def test_the_preparation_writes_a_recipe_next_to_the_data_bin_that_reads_back(tmp_path, codes):
    fake_preparation(tmp_path / "out", codes)
    path = write_recipe(tmp_path / "out")
    data_bin = tmp_path / "out" / "data-bin"
    assert path == data_bin / RECIPE_FILE
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw == {"format": 1, "dataset": "multi30k", "source_lang": "de", "target_lang": "en", "tokenizer": "moses",
                   "moses_aggressive_dash_splits": False, "lowercase": True, "bpe": "subword_nmt",
                   "bpe_model": "bpe.code"}
    assert (data_bin / "bpe.code").read_bytes() == codes.read_bytes()  # the data-bin alone is enough
    moved = tmp_path / "moved-data-bin"
    data_bin.rename(moved)
    recipe = read_recipe(moved)
    assert recipe.languages == ("de", "en") and recipe.lowercase and recipe.bpe == "subword_nmt"
    assert recipe.bpe_model == moved / "bpe.code"
    assert recipe.tokenize_config("en") == TokenizeConfig(lang="en", aggressive=False, lowercase=True)


def test_a_missing_or_broken_recipe_says_what_to_do(tmp_path):
    with pytest.raises(PrepError, match=r"preprocessing.json not found: the data-bin was not prepared by "
                                        r"data_prep/prepare-\*.sh .*--recipe"):
        read_recipe(tmp_path)
    (tmp_path / RECIPE_FILE).write_text('{"source_lang": "de", "target_lang": "en", "lowercase": true, '
                                        '"bpe": "wordpiece"}', encoding="utf-8")
    with pytest.raises(PrepError, match="bpe must be one of subword_nmt, sentencepiece, none"):
        read_recipe(tmp_path)
    (tmp_path / RECIPE_FILE).write_text('{"source_lang": "de", "target_lang": "en", "lowercase": true, '
                                        '"bpe": "subword_nmt", "bpe_model": "gone.code"}', encoding="utf-8")
    with pytest.raises(PrepError, match="its bpe_model .*gone.code does not exist"):
        read_recipe(tmp_path)


# --- preparing source text, rendering hypotheses --------------------------------------------------


def test_source_text_is_prepared_like_the_data_bin(recipe, codes):
    line = "Zwei Hunde spielen im Schnee."
    expected = SubwordNmtSegmenter(str(codes))(LineProcessor(TokenizeConfig("de", lowercase=True))(line)).split()
    tokens = SourceText(recipe, "de")(line)
    assert tokens == expected
    assert "".join(tokens).replace("@@", "") == "zweihundespielenimschnee."  # lowercased, period split off
    assert any(t.endswith("@@") for t in SourceText(recipe, "de")("Ein Fahrradfahrer"))


def test_truncation_cuts_at_a_word_boundary():
    words = ["ein", "fahr@@", "rad@@", "fahrer", "fährt", "."]
    assert truncate(words, 3, "subword_nmt") == ["ein"]  # not inside fahr@@ rad@@ fahrer
    assert truncate(words, 4, "subword_nmt") == ["ein", "fahr@@", "rad@@", "fahrer"]
    assert truncate(words, 3, "none") == words[:3]
    assert truncate(["lang@@", "lang@@", "wort"], 2, "subword_nmt") == ["lang@@", "lang@@"]  # one long word: cut inside
    pieces = ["▁ein", "▁fahr", "rad", "▁fährt", "."]
    assert truncate(pieces, 2, "sentencepiece") == ["▁ein"]
    assert truncate(pieces, 3, "sentencepiece") == ["▁ein", "▁fahr", "rad"]
    assert truncate(pieces, 9, "sentencepiece") == pieces


def test_target_text_removes_bpe_and_detokenizes(recipe):
    assert TargetText(recipe, "en")("a man ri@@ des a bi@@ ke &apos;s bike .") == "a man rides a bike's bike."


# --- every line answered ---------------------------------------------------------------------------


class FakeModel:
    """A backend that 'translates' a source into its reversed subword tokens and records what it got."""

    def __init__(self, max_source_tokens: int | None) -> None:
        self.max_source_tokens = max_source_tokens
        self.calls: list[list[list[str]]] = []

    def translate(self, sources: list[list[str]]) -> list[str]:
        self.calls.append(sources)
        return [" ".join(reversed(s)) for s in sources]


def translator(max_source_tokens: int | None = 20):
    messages: list[str] = []
    plain = DataRecipe("de", "en", lowercase=True, bpe="none")
    model = FakeModel(max_source_tokens)
    return LineTranslator(model, SourceText(plain, "de"), TargetText(plain, "en"), messages.append), model, messages


def test_empty_long_and_capitalised_lines_each_get_one_answer_in_order():
    lines = ["", " ".join(["Hund"] * 2000), "Ein Mann fährt Fahrrad.", "   "]
    tr, model, messages = translator(max_source_tokens=1023)
    out = tr.translate(lines)
    assert len(out) == 4 and out[0] == "" and out[3] == ""
    assert out[2] == ". fahrrad fährt mann ein"  # lowercased like the training text
    assert len(model.calls) == 1 and [len(s) for s in model.calls[0]] == [1023, 5]  # one batch, truncated to fit
    warnings = [m for m in messages if m.startswith("warning:")]
    assert warnings == ["warning: line 2: 2,000 subword tokens, more than the 1,023 the model can read: "
                        "translating only the first 1,023 (the rest of the line is dropped)"]
    notes = [m for m in messages if "lowercased" in m]
    assert len(notes) == 1 and "first capitals on line 2" in notes[0]


def test_no_lowercasing_note_for_lowercase_input_and_nothing_sent_for_blank_input():
    tr, model, messages = translator()
    assert tr.translate(["ein mann .", ""]) == [". mann ein", ""]
    assert tr.translate(["", "\t"]) == ["", ""]
    assert messages == [] and len(model.calls) == 1


def test_lines_are_numbered_across_buffers_and_flushed_per_buffer():
    tr, model, messages = translator(max_source_tokens=3)
    out = io.StringIO()
    lines = iter(["a", "b", "c", "d e f g", "h"])
    assert translate_stream(tr, lines, out, buffer_size=2) == 5
    assert out.getvalue().splitlines() == ["a", "b", "c", "f e d", "h"]
    assert len(model.calls) == 3
    assert [m.split(":")[1].strip() for m in messages] == ["line 4"]


def test_invalid_utf8_is_replaced_with_a_warning_not_fatal():
    messages: list[str] = []
    lines = list(read_lines(io.BytesIO("gut\n".encode() + b"schlecht \xff\n" + "ende\r\n".encode()), messages.append))
    assert lines == ["gut", "schlecht \ufffd", "ende"]
    assert messages == ["warning: line 2 is not valid UTF-8; undecodable bytes were replaced by U+FFFD"]


# --- command-line errors ---------------------------------------------------------------------------


def test_a_text_file_as_model_is_a_plain_error(tmp_path, capsys):
    junk = tmp_path / "notes.txt"
    junk.write_text("these are my notes\n", encoding="utf-8")
    assert main([str(junk), str(junk)]) == 2
    err = capsys.readouterr().err
    assert f"error: {junk} is not a fairseq checkpoint" in err and "pass a checkpoint written by fairseq-train" in err


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "--device tpu: expected cpu, cuda or cuda:N"),
    (["--beam", "0"], "--beam must be at least 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--parallel-batches", "0"], "--parallel-batches must be at least 1"),
    (["--parallel-batches", "2"], "--parallel-batches applies to CTranslate2 model directories"),
])
def test_bad_options_are_refused_before_loading(tmp_path, capsys, args, message):
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"")
    assert main([str(junk), *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_model_input_and_a_folder_that_is_no_ctranslate2_model(tmp_path, capsys):
    assert main([str(tmp_path / "nope.pt")]) == 2
    assert f"error: model {tmp_path / 'nope.pt'} does not exist" in capsys.readouterr().err
    assert main([str(tmp_path), str(tmp_path / "missing.de")]) == 2
    assert f"error: input {tmp_path / 'missing.de'} is not a file" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "is a folder but not a CTranslate2 model directory (no model.bin)" in capsys.readouterr().err


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = tmp_path / "model.pt"
    model.write_bytes(b"")
    assert main([str(model), "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA device is available here; use --device cpu" in capsys.readouterr().err


# --- a real checkpoint: the output file, the direction, the recipe (issue 25) ----------------------

TOY_DIMS = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
            "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
            "--decoder-attention-heads", "2"]
#: a recipe for text that is already tokens of the toy dictionary: no Moses, no BPE, no lowercasing
PLAIN_RECIPE = {"format": 1, "source_lang": "de", "target_lang": "en", "tokenizer": "none", "lowercase": False,
                "bpe": "none"}
TOY_LINES = ["w1 w2 w3", "w4 w5", "w6 w7 w8 w9"]
TOY_DECODE = ["--beam", "2", "--max-len-b", "4", "--buffer-size", "1"]


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    """A random de->en fairseq transformer (``-s de -t en`` recorded), its data-bin with a plain recipe, an input."""
    from tests.conftest import make_checkpoint, toy_dictionary, write_data_dir

    folder = tmp_path_factory.mktemp("toy_translate")
    data_bin = write_data_dir(folder / "data-bin", toy_dictionary(30))
    (data_bin / RECIPE_FILE).write_text(json.dumps(PLAIN_RECIPE), encoding="utf-8")
    checkpoint, _, _ = make_checkpoint(folder / "model.pt", data_bin, "transformer", *TOY_DIMS)
    source = folder / "input.de"
    source.write_text("".join(line + "\n" for line in TOY_LINES), encoding="utf-8")
    return checkpoint, data_bin, source


def folder_state(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` (hidden ones included) with its bytes."""
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_output_replaces_an_existing_file_only_when_complete_and_keeps_its_permissions(toy_model, tmp_path, capsys):
    checkpoint, _, source = toy_model
    output = tmp_path / "out.en"
    output.write_text("yesterday's translations\n", encoding="utf-8")
    output.chmod(0o640)
    assert main([str(checkpoint), str(source), "--output", str(output), *TOY_DECODE]) == 0
    lines = output.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(lines) and lines != ["yesterday's translations"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.en"]  # no temporary file left
    assert output.stat().st_mode & 0o777 == 0o640
    assert f"3 lines translated to {output}" in capsys.readouterr().err


def test_a_run_that_fails_or_is_terminated_midway_leaves_the_old_output_and_no_temporary_file(toy_model, tmp_path,
                                                                                            monkeypatch, capsys):
    """The first buffer is written (to the temporary file), then decoding fails: FILE must be as it was."""
    import signal

    from pet_fairseq.translate.fairseq_model import FairseqModel

    checkpoint, _, source = toy_model
    output = tmp_path / "out.en"
    output.write_text("yesterday's translations\n", encoding="utf-8")
    before = folder_state(tmp_path)
    translate_once = FairseqModel.translate
    calls: list[str] = []

    def fail_on_the_second_buffer(exc: Callable[[], None]):
        def translate(self, sources):
            calls.append(" ".join(sources[0]))
            if len(calls) == 2:
                exc()
            return translate_once(self, sources)
        return translate

    def crash():
        raise RuntimeError("out of memory")

    monkeypatch.setattr(FairseqModel, "translate", fail_on_the_second_buffer(crash))
    with pytest.raises(RuntimeError, match="out of memory"):
        main([str(checkpoint), str(source), "--output", str(output), *TOY_DECODE])
    assert calls == TOY_LINES[:2]  # one buffer of one line went through before the failure
    assert folder_state(tmp_path) == before

    handler = signal.getsignal(signal.SIGTERM)
    calls.clear()
    monkeypatch.setattr(FairseqModel, "translate",
                        fail_on_the_second_buffer(lambda: os.kill(os.getpid(), signal.SIGTERM)))
    with pytest.raises(SystemExit) as terminated:
        main([str(checkpoint), str(source), "--output", str(output), *TOY_DECODE])
    assert terminated.value.code == 143 and calls == TOY_LINES[:2]
    assert folder_state(tmp_path) == before
    assert signal.getsignal(signal.SIGTERM) == handler  # restored once the output is done with
    capsys.readouterr()


def test_an_output_in_a_missing_folder_or_that_is_a_folder_is_refused_before_loading(toy_model, tmp_path, capsys):
    checkpoint, _, source = toy_model
    assert main([str(checkpoint), str(source), "--output", str(tmp_path / "nope" / "out.en")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --output {tmp_path / 'nope' / 'out.en'}: its folder {tmp_path / 'nope'} does not exist; "
                   "create it first\n")
    assert main([str(checkpoint), str(source), "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: --output {tmp_path} is a folder; pass a file name\n"
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_is_the_input_file_is_refused(toy_model, tmp_path, capsys):
    """--output equal to the input file is refused: the source text is kept."""
    checkpoint, _, source = toy_model
    same = tmp_path / "same.de"
    same.write_bytes(source.read_bytes())
    link = tmp_path / "link.de"
    link.symlink_to(same)
    for output in (same, link, tmp_path / "." / "same.de"):
        assert main([str(checkpoint), str(same), "--output", str(output), *TOY_DECODE]) == 2
        assert capsys.readouterr().err == (f"error: --output {output} is the input file {same}: its text would be "
                                           "replaced by the translations; choose another --output\n")
    assert same.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--max-len-b", "-5"], "--max-len-b must be at least 1, got -5"),
    (["--max-len-b", "0"], "--max-len-b must be at least 1, got 0"),
    (["--max-len-a", "-1"], "--max-len-a must be at least 0, got -1.0"),
])
def test_an_impossible_length_limit_is_one_line(toy_model, tmp_path, capsys, args, message):
    """Negative length limits are refused at the command line."""
    checkpoint, _, source = toy_model
    before = source.read_bytes()
    assert main([str(checkpoint), str(source), *args]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert source.read_bytes() == before


def test_a_truncated_ctranslate2_model_is_one_line(toy_model, tmp_path, capsys):
    """A truncated CTranslate2 model.bin is one line that says to export it again."""
    pytest.importorskip("ctranslate2", reason="ctranslate2 is an optional extra: pip install -e .[ctranslate2]")
    from pet_fairseq.core.ctranslate2.convert import convert

    checkpoint, _, source = toy_model
    model_dir = convert(checkpoint, tmp_path / "ct2")
    assert main([str(model_dir), str(source), *TOY_DECODE]) == 0  # the complete model translates
    capsys.readouterr()
    weights = model_dir / "model.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = weights.read_bytes()
    assert main([str(model_dir), str(source), *TOY_DECODE]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot load the CTranslate2 model {model_dir} (") and len(err.splitlines()) == 1
    assert err.endswith("); if its model.bin is damaged or incomplete, export it again (pet-export ctranslate2 ... "
                        "--force)\n")
    assert weights.read_bytes() == before


@pytest.mark.parametrize("options, asked", [
    (["--source-lang", "en", "--target-lang", "de"], "en->de"),
    (["--target-lang", "de"], "de->de"),
])
def test_a_direction_that_contradicts_the_checkpoint_is_refused(toy_model, tmp_path, capsys, options, asked):
    checkpoint, _, source = toy_model
    output = tmp_path / "out.en"
    output.write_text("kept\n", encoding="utf-8")
    assert main([str(checkpoint), str(source), "--output", str(output), *options, *TOY_DECODE]) == 2
    err = capsys.readouterr().err
    given = " ".join(options)
    assert err == (f"error: {checkpoint} translates de->en, but {given} asks for {asked}: a model only translates "
                   f"the direction it was trained for; drop {given} (or use a model trained for {asked})\n")
    assert output.read_text(encoding="utf-8") == "kept\n"
    # the direction the model records, given explicitly, is accepted
    assert main([str(checkpoint), str(source), "--source-lang", "de", "--target-lang", "en", *TOY_DECODE]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_a_model_that_records_no_direction_is_not_checked():
    from pet_fairseq.core.direction import check_direction

    check_direction("teacher.pt", (None, None), "en", "de")  # trained without -s/-t: the options decide
    check_direction("teacher.pt", ("de", "en"), "de", None)
    with pytest.raises(TranslateError, match=r"^teacher.pt translates de->\?, but --source-lang en asks for en->\?"):
        check_direction("teacher.pt", ("de", None), "en", None, TranslateError)


def test_a_data_bin_without_recipe_names_the_file_and_the_fix_once(toy_model, tmp_path, capsys):
    """A seq-KD data-bin holds the dictionaries but no preprocessing.json: the error names the real path."""
    checkpoint, data_bin, source = toy_model
    seqkd = tmp_path / "seqkd"
    seqkd.mkdir()
    for name in ("dict.de.txt", "dict.en.txt"):
        (seqkd / name).write_bytes((data_bin / name).read_bytes())
    assert main([str(checkpoint), str(source), "--data-bin", str(seqkd), *TOY_DECODE]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {seqkd / RECIPE_FILE} not found (the data-bin {seqkd} holds no preprocessing "
                          "recipe), so the input cannot be prepared like the model's training text: pass --recipe "
                          "with the preprocessing.json of the data-bin the text was prepared in (for a student "
                          "trained on a seq-KD corpus, the original data-bin's) or --data-bin that data-bin")
    assert f"{RECIPE_FILE}/{RECIPE_FILE}" not in err and err.count("\n") == 1
    assert main([str(checkpoint), str(source), "--data-bin", str(seqkd), "--recipe", str(tmp_path / "gone.json"),
                 *TOY_DECODE]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'gone.json'} not found (--recipe "
                                              f"{tmp_path / 'gone.json'} holds no preprocessing recipe)")
    # the fix the message gives works
    assert main([str(checkpoint), str(source), "--data-bin", str(seqkd), "--recipe", str(data_bin / RECIPE_FILE),
                 *TOY_DECODE]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
