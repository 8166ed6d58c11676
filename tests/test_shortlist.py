"""Vocabulary shortlists: Dice-ranked candidates, the vmap file, and decoding restricted to them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pet_fairseq.core.errors import ExportError
from pet_fairseq.export.__main__ import main as export_main
from pet_fairseq.export.shortlist import Shortlist, build_shortlist, write_shortlist
from tests.conftest import make_checkpoint, toy_dictionary, write_data_dir
from tests.test_pet_transformer import peaky

SOURCES = ["das haus", "das auto", "ein haus", "ein rotes auto", "das rote haus"]
TARGETS = ["the house", "the car", "a house", "a red car", "the red house"]
SOURCE_VOCABULARY = ["das", "haus", "auto", "ein", "rotes", "rote", "berlin"]
TARGET_VOCABULARY = ["the", "house", "car", "a", "red", "berlin"]


def build(**sizes) -> Shortlist:
    return build_shortlist([s.split() for s in SOURCES], [t.split() for t in TARGETS], SOURCE_VOCABULARY,
                           TARGET_VOCABULARY, **sizes)


def test_candidates_are_ranked_by_dice_and_the_most_common_targets_are_always_allowed():
    shortlist = build(frequent=2, per_token=1)
    # sentence counts: the 3, house 3, a 2, car 2, red 2 -> the two most common (ties by token)
    assert shortlist.frequent == ["house", "the"]
    # dice(haus, house) = 2*3/(3+3) = 1 beats dice(haus, the) = 2*2/(3+3)
    assert shortlist.candidates["haus"] == ["house"]
    assert shortlist.candidates["das"] == ["the"]
    assert shortlist.candidates["auto"] == ["car"]
    # dice(rotes, ·) = 2*1/(1+2) for a, car and red, each in 2 sentences: a full tie keeps token order
    assert shortlist.candidates["rotes"] == ["a"]
    # a source token missing from the bitext keeps its copy when the target vocabulary has it
    assert shortlist.candidates["berlin"] == ["berlin"]
    assert shortlist.sentence_pairs == 5


def test_per_token_limits_the_candidates_and_copies_are_added_once():
    shortlist = build(frequent=0, per_token=3)
    assert shortlist.frequent == []
    assert shortlist.candidates["haus"] == ["house", "the", "a"]  # dice 1, 2*2/6, 2*1/5
    assert all(len(c) <= 3 for c in shortlist.candidates.values())
    copied = build_shortlist([["house"]], [["house"]], ["house"], ["house"], frequent=0, per_token=5)
    assert copied.candidates == {"house": ["house"]}
    # targets outside the target vocabulary are never candidates, not even frequent ones
    unknown = build_shortlist([["haus"]], [["house"]], ["haus"], ["home"], frequent=5, per_token=5)
    assert unknown.frequent == [] and unknown.candidates == {}


def test_vmap_file_is_ctranslate2s_format(tmp_path):
    path = build(frequent=2, per_token=1).write_vmap(tmp_path / "out" / "vocab.vmap")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "\thouse the"  # the empty key: always-included tokens
    entries = dict(line.split("\t") for line in lines[1:])
    assert entries["haus"] == "house" and entries["berlin"] == "berlin"
    assert len(entries) == len(lines) - 1


@pytest.mark.parametrize("sources, targets, sizes, message", [
    ([["a"]], [["b"], ["c"]], {}, "not parallel: 1 source and 2 target sentences"),
    ([], [], {}, "the shortlist bitext is empty"),
    ([[], []], [["b"], []], {}, r"the shortlist bitext is empty \(no tokens on one side\)"),
    ([["a"]], [["b"]], {"per_token": 0}, "--per-token 0: the candidates per source token must be >= 1"),
    ([["a"]], [["b"]], {"frequent": -1}, "--frequent -1: the always-allowed target tokens must be >= 0"),
])
def test_bad_bitexts_and_sizes_are_clear_errors(sources, targets, sizes, message):
    with pytest.raises(ExportError, match=message):
        build_shortlist(sources, targets, ["a"], ["b"], **sizes)


def test_command_reads_text_or_binarized_bitexts_and_refuses_to_overwrite(tmp_path, capsys):
    data_bin = write_data_dir(tmp_path / "data-bin", toy_dictionary(20))
    (tmp_path / "bitext.de").write_text("w1 w2\nw3\n", encoding="utf-8")
    (tmp_path / "bitext.en").write_text("w4 w5\nw6 w1\n", encoding="utf-8")
    text = ["--source-text", str(tmp_path / "bitext.de"), "--target-text", str(tmp_path / "bitext.en")]
    common = ["--data-bin", str(data_bin), "--source-lang", "de", "--target-lang", "en"]
    assert export_main(["shortlist", str(tmp_path / "s.vmap"), *common, *text, "--frequent", "1"]) == 0
    lines = (tmp_path / "s.vmap").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "\tw1"  # w1, w4, w5, w6 each in one target sentence: ties by token
    entries = dict(line.split("\t") for line in lines[1:])
    assert entries["w3"] == "w1 w6 w3" and entries["w1"].split()[:2] == ["w4", "w5"]
    assert entries["w19"] == "w19"  # never seen: its copy only
    assert export_main(["shortlist", str(tmp_path / "s.vmap"), *common, *text]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert export_main(["shortlist", str(tmp_path / "t.vmap"), *common, text[0], text[1]]) == 2
    assert "give both --source-text and --target-text" in capsys.readouterr().err
    assert export_main(["shortlist", str(tmp_path / "t.vmap"), *common]) == 2  # no binarized train subset
    assert "subset 'train' (de-en) not found" in capsys.readouterr().err
    with pytest.raises(ExportError, match="does not exist; pass the BPE'd training text"):
        write_shortlist(tmp_path / "u.vmap", data_bin, "de", "en", source_text=tmp_path / "x.de",
                        target_text=tmp_path / "x.en")


def _binarize(data_bin: Path, dictionary, sources: list[str], targets: list[str]) -> None:
    from fairseq.data import indexed_dataset

    for lang, lines in (("de", sources), ("en", targets)):
        prefix = data_bin / f"train.de-en.{lang}"
        builder = indexed_dataset.make_builder(f"{prefix}.bin", impl="mmap", vocab_size=len(dictionary))
        for line in lines:
            builder.add_item(dictionary.encode_line(line, add_if_not_exist=False))
        builder.finalize(f"{prefix}.idx")


def test_binarized_train_subset_gives_the_same_shortlist_as_its_text(tmp_path):
    dictionary = toy_dictionary(20)
    data_bin = write_data_dir(tmp_path / "data-bin", dictionary)
    sources, targets = ["w1 w2 w3", "w3 w4", "w5"], ["w6 w7", "w7 w8 w1", "w9"]
    _binarize(data_bin, dictionary, sources, targets)
    for side, lines in (("de", sources), ("en", targets)):
        (tmp_path / f"text.{side}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    binarized = write_shortlist(tmp_path / "a.vmap", data_bin, "de", "en", frequent=2, per_token=2)
    text = write_shortlist(tmp_path / "b.vmap", data_bin, "de", "en", source_text=tmp_path / "text.de",
                           target_text=tmp_path / "text.en", frequent=2, per_token=2)
    assert binarized == text and binarized.sentence_pairs == 3
    assert (tmp_path / "a.vmap").read_text() == (tmp_path / "b.vmap").read_text()


# --------------------------------------------------------------------------------------------
# decoding with a stored shortlist (CTranslate2)

VOCAB = 40
DIMS = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
        "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny PET student with sharp weights, exported to CTranslate2 float32 with and without shortlists."""
    pytest.importorskip("ctranslate2", reason="ctranslate2 is an optional extra: pip install -e .[ctranslate2]")
    from pet_fairseq.core.ctranslate2.convert import convert

    tmp = tmp_path_factory.mktemp("shortlist-export")
    dictionary = toy_dictionary(VOCAB)
    data_bin = write_data_dir(tmp / "data-bin", dictionary)
    path, model, _ = make_checkpoint(tmp / "student.pt", data_bin, "pet_iwslt_de_en", *DIMS, seed=4)
    peaky(model, scale=2.5)
    model.eval()
    torch.save({**torch.load(path), "model": model.state_dict()}, path)
    words = [f"w{i}" for i in range(VOCAB)]
    narrow = Shortlist(frequent=["w1", "w2"], candidates={w: [f"w{(int(w[1:]) * 7) % VOCAB}"] for w in words},
                       sentence_pairs=0)
    everything = Shortlist(frequent=words, candidates={}, sentence_pairs=0)
    dirs = {"none": convert(path, tmp / "none")}
    for name, shortlist in (("narrow", narrow), ("everything", everything)):
        vmap = shortlist.write(tmp / f"{name}.vmap", data_bin, "de", "en")
        dirs[name] = convert(path, tmp / name, vocab_shortlist=vmap)
    return model, dictionary, dirs, narrow, data_bin


def sources() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(4, 4 + VOCAB, (int(n),), generator=g).tolist() for n in (3, 5, 6, 8)]


def restricted_greedy(model, dictionary, source: list[int], allowed: set[int], max_tokens: int) -> list[int]:
    """Greedy decoding with the full fairseq forward, every token outside ``allowed`` masked out."""
    src = torch.tensor([source + [dictionary.eos()]])
    out = [dictionary.eos()]
    mask = torch.full((len(dictionary),), float("-inf"))
    mask[sorted(allowed)] = 0
    with torch.no_grad():
        for step in range(max_tokens):
            logits = model(src, torch.tensor([len(source) + 1]), torch.tensor([out]))[0][0, -1] + mask
            if step == 0:
                logits[dictionary.eos()] = float("-inf")  # at least one token, as the translators ask
            token = int(logits.argmax())
            if token == dictionary.eos():
                break
            out.append(token)
    return out[1:]


def test_a_shortlist_holding_every_token_changes_no_hypothesis(exported):
    from pet_fairseq.evaluation.translators import CTranslate2Translator, OutputLength

    _, d, dirs, _, _ = exported
    plain = CTranslate2Translator("s", str(dirs["none"]), d, d, threads=1)
    full = CTranslate2Translator("s", str(dirs["everything"]), d, d, threads=1, use_vmap=True)
    assert full.engine == "ctranslate2-shortlist" and plain.engine == "ctranslate2"
    for beam in (4, 1):
        length = OutputLength(max_len_b=10)
        assert full.translate(full.prepare(sources()), beam, length) == plain.translate(plain.prepare(sources()),
                                                                                       beam, length)


def test_decoding_with_a_shortlist_is_decoding_over_its_candidates_only(exported):
    from pet_fairseq.evaluation.translators import CTranslate2Translator, OutputLength

    model, d, dirs, narrow, _ = exported
    restricted = CTranslate2Translator("s", str(dirs["narrow"]), d, d, threads=1, use_vmap=True)
    unrestricted = CTranslate2Translator("s", str(dirs["narrow"]), d, d, threads=1)  # vmap stored, not used
    plain = CTranslate2Translator("s", str(dirs["none"]), d, d, threads=1)
    length = OutputLength(max_len_b=10)
    assert unrestricted.translate(unrestricted.prepare(sources()), 4, length) == plain.translate(
        plain.prepare(sources()), 4, length)
    changed = 0
    for source in sources():  # one sentence per batch: the candidates are that sentence's
        allowed = {d.index(t) for t in narrow.frequent} | {d.index(narrow.candidates[d[i]][0]) for i in source}
        allowed |= {d.eos(), d.bos(), d.unk()}
        hypothesis = restricted.translate(restricted.prepare([source]), 1, length)[0]
        assert set(hypothesis) <= allowed
        assert hypothesis == restricted_greedy(model, d, source, allowed, length.max_len_b)
        changed += hypothesis != plain.translate(plain.prepare([source]), 1, length)[0]
        for beam in (4,):
            assert set(restricted.translate(restricted.prepare([source]), beam, length)[0]) <= allowed
    assert changed > 0  # the shortlist did restrict something


def test_the_export_records_the_shortlist_and_translate_uses_it(exported, tmp_path, capsys):
    from pet_fairseq.core.ctranslate2.model_dir import export_info, has_shortlist

    _, d, dirs, _, data_bin = exported
    assert has_shortlist(dirs["narrow"]) and not has_shortlist(dirs["none"])
    assert export_info(dirs["narrow"])["vocab_shortlist"].endswith("narrow.vmap")
    assert export_info(dirs["none"])["vocab_shortlist"] is None
    text = tmp_path / "in.txt"
    text.write_text("".join(" ".join(d[i] for i in s) + "\n" for s in sources()), encoding="utf-8")
    outputs = {}
    for name, extra in (("with", []), ("without", ["--no-shortlist"])):
        assert export_main(["translate", str(dirs["narrow"]), "--input", str(text), "--tokenizer", "none",
                            "--beam", "1", "--max-len-b", "10", "--output", str(tmp_path / name), *extra]) == 0
        outputs[name] = (tmp_path / name).read_text().splitlines()
    assert export_main(["translate", str(dirs["none"]), "--input", str(text), "--tokenizer", "none", "--beam", "1",
                        "--max-len-b", "10", "--output", str(tmp_path / "plain")]) == 0
    assert outputs["without"] == (tmp_path / "plain").read_text().splitlines() != outputs["with"]
    capsys.readouterr()


def test_a_missing_shortlist_file_is_an_export_error(tmp_path):
    pytest.importorskip("ctranslate2", reason="ctranslate2 is an optional extra: pip install -e .[ctranslate2]")
    from pet_fairseq.core.ctranslate2.convert import convert

    with pytest.raises(ExportError, match="the vocabulary shortlist .*missing.vmap does not exist; write one with"):
        convert(tmp_path / "student.pt", tmp_path / "out", vocab_shortlist=tmp_path / "missing.vmap")


def test_the_text_translator_decodes_a_shortlisted_model_with_its_shortlist(exported):
    from pet_fairseq.evaluation.translators import CTranslate2Translator, OutputLength
    from pet_fairseq.translate.ctranslate2_model import load_ctranslate2_model

    _, d, dirs, _, data_bin = exported
    restricted = CTranslate2Translator("s", str(dirs["narrow"]), d, d, threads=1, use_vmap=True)
    expected = restricted.translate(restricted.prepare(sources()), 5, OutputLength(max_len_b=10))
    for name, use_vmap in (("narrow", True), ("none", False)):
        model, _, langs = load_ctranslate2_model(dirs[name], data_bin, "de", "en", "cpu", 1, beam=5, max_len_a=0,
                                                 max_len_b=10, batch_size=64)
        assert model.use_vmap is use_vmap and langs == ("de", "en")
    model = load_ctranslate2_model(dirs["narrow"], data_bin, "de", "en", "cpu", 1, beam=5, max_len_a=0, max_len_b=10,
                                   batch_size=64)[0]
    lines = model.translate([[d[i] for i in s] for s in sources()])
    assert lines == [" ".join(d[i] for i in hypothesis) for hypothesis in expected]


def test_worker_errors_reach_the_caller_and_close_ends_the_worker(exported):
    from pet_fairseq.evaluation.errors import EvaluationError
    from pet_fairseq.evaluation.translators import CTranslate2Translator, OutputLength

    _, d, dirs, _, _ = exported
    translator = CTranslate2Translator("student", str(dirs["none"]), d, d, threads=1)
    with pytest.raises(EvaluationError, match=r"^student \(CTranslate2\): ValueError: The beam size must be > 0"):
        translator.translate(translator.prepare(sources()), 0, OutputLength(max_len_b=5))
    assert len(translator.translate(translator.prepare(sources()), 1, OutputLength(max_len_b=5))) == 4  # still serving
    translator.close()
    assert translator._process.poll() == 0


# --------------------------------------------------------------------------------------------
# shortlists are checked against the model they are stored in (issue 25)


def test_the_shortlist_command_writes_a_record_of_languages_dictionaries_and_the_vmap(tmp_path):
    import hashlib
    import json

    from pet_fairseq.core.ctranslate2.shortlist_record import dictionary_digest, record_path

    data_bin = write_data_dir(tmp_path / "data-bin", toy_dictionary(20))
    (tmp_path / "bitext.de").write_text("w1 w2 rare\nw3\n", encoding="utf-8")  # "rare": not in the dictionary
    (tmp_path / "bitext.en").write_text("w4 w5\nw6 w1\n", encoding="utf-8")
    write_shortlist(tmp_path / "s.vmap", data_bin, "de", "en", source_text=tmp_path / "bitext.de",
                    target_text=tmp_path / "bitext.en", frequent=1)
    record = json.loads(record_path(tmp_path / "s.vmap").read_text(encoding="utf-8"))
    assert record == {"format": 1, "source_lang": "de", "target_lang": "en", "data_bin": str(data_bin.resolve()),
                      "source_dictionary_sha256": dictionary_digest(data_bin / "dict.de.txt"),
                      "target_dictionary_sha256": dictionary_digest(data_bin / "dict.en.txt"),
                      "vmap_sha256": hashlib.sha256((tmp_path / "s.vmap").read_bytes()).hexdigest(),
                      "sentence_pairs": 2}
    keys = [line.split("\t")[0] for line in (tmp_path / "s.vmap").read_text(encoding="utf-8").splitlines()]
    assert "rare" not in keys and "w1" in keys  # a token the model reads as <unk> gets no entry
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bitext.de", "bitext.en", "data-bin", "s.vmap", "s.vmap.json"]


@pytest.fixture()
def model_dir_copy(exported, tmp_path):
    """A copy of an exported model directory, to pass with --force: a refused export must leave it as it was."""
    import shutil

    _, _, dirs, _, _ = exported
    out = tmp_path / "previous-export"
    shutil.copytree(dirs["none"], out)
    return out


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def refused_export(exported, out: Path, vmap: Path, capsys) -> str:
    """Run ``export ctranslate2 --force --vocab-shortlist vmap`` into ``out``; its error line (exit code 2 asserted)."""
    _, _, _, _, data_bin = exported
    student = data_bin.parent / "student.pt"
    before = folder_bytes(out)
    capsys.readouterr()  # what writing the shortlist logged
    assert export_main(["ctranslate2", str(student), str(out), "--data-bin", str(data_bin), "--force",
                        "--vocab-shortlist", str(vmap)]) == 2
    assert folder_bytes(out) == before
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return err[len("error: "):].rstrip("\n")


def test_a_shortlist_built_with_source_and_target_swapped_is_refused(exported, model_dir_copy, tmp_path, capsys):
    _, _, _, _, data_bin = exported
    vmap = tmp_path / "swapped.vmap"
    write_shortlist(vmap, data_bin, "en", "de", source_text=TEXT["en"](tmp_path), target_text=TEXT["de"](tmp_path))
    assert refused_export(exported, model_dir_copy, vmap, capsys) == (
        f"the vocabulary shortlist {vmap} was built for en->de (source and target swapped), but the model translates "
        f"de->en: rebuild it for this model with python -m pet_fairseq.export shortlist NEW.vmap --data-bin {data_bin} "
        "--source-lang de --target-lang en")


def test_a_shortlist_from_another_data_bin_is_refused(exported, model_dir_copy, tmp_path, capsys):
    _, _, _, _, data_bin = exported
    other = write_data_dir(tmp_path / "other-data-bin", toy_dictionary(VOCAB + 10))  # more types, other ids
    vmap = tmp_path / "other.vmap"
    write_shortlist(vmap, other, "de", "en", source_text=TEXT["de"](tmp_path), target_text=TEXT["en"](tmp_path))
    assert refused_export(exported, model_dir_copy, vmap, capsys) == (
        f"the vocabulary shortlist {vmap} was built with the dictionaries of {other.resolve()}, whose source "
        f"dictionary is not the model's {data_bin / 'dict.de.txt'}: rebuild it for this model with python -m "
        f"pet_fairseq.export shortlist NEW.vmap --data-bin {data_bin} --source-lang de --target-lang en")


def test_a_shortlist_without_its_record_or_changed_after_it_is_refused(exported, model_dir_copy, tmp_path, capsys):
    from pet_fairseq.core.ctranslate2.shortlist_record import record_path

    _, _, _, narrow, data_bin = exported
    rebuild = (f"rebuild it for this model with python -m pet_fairseq.export shortlist NEW.vmap --data-bin {data_bin} "
               "--source-lang de --target-lang en")
    bare = narrow.write_vmap(tmp_path / "bare.vmap")  # a vmap as written before records existed
    assert refused_export(exported, model_dir_copy, bare, capsys) == (
        f"the vocabulary shortlist {bare} has no record of the language pair and dictionaries it was built for "
        f"({record_path(bare)} not found; shortlists written before this check have none): {rebuild}")
    edited = narrow.write(tmp_path / "edited.vmap", data_bin, "de", "en")
    with edited.open("a", encoding="utf-8") as f:
        f.write("w1\tw39\n")
    assert refused_export(exported, model_dir_copy, edited, capsys) == (
        f"the vocabulary shortlist {edited} was changed after {record_path(edited)} was written for it: {rebuild}")


def _text(lang: str):
    def write(folder: Path) -> Path:
        path = folder / f"bitext.{lang}"
        lines = ["w1 w2 w3", "w4 w5", "w6 w7 w8"] if lang == "de" else ["w9 w10", "w11 w12 w13", "w14"]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path
    return write


TEXT = {"de": _text("de"), "en": _text("en")}


def test_a_direction_that_contradicts_the_export_is_refused_by_every_tool(exported, tmp_path, capsys):
    from pet_fairseq.translate import TranslateError
    from pet_fairseq.translate.ctranslate2_model import load_ctranslate2_model

    _, _, dirs, _, data_bin = exported
    student = data_bin.parent / "student.pt"
    expected = (f"{dirs['none']} translates de->en, but --source-lang en --target-lang de asks for en->de: a model "
                "only translates the direction it was trained for; drop --source-lang en --target-lang de (or use a "
                "model trained for en->de)")
    with pytest.raises(TranslateError) as refused:
        load_ctranslate2_model(dirs["none"], data_bin, "en", "de", "cpu", 1, beam=5, max_len_a=0, max_len_b=10,
                               batch_size=64)
    assert str(refused.value) == expected
    text = TEXT["en"](tmp_path)
    assert export_main(["translate", str(dirs["none"]), "--input", str(text), "--source-lang", "en", "--target-lang",
                        "de", "--output", str(tmp_path / "hyps")]) == 2
    assert capsys.readouterr().err == f"error: {expected}\n" and not (tmp_path / "hyps").exists()
    assert export_main(["ctranslate2", str(student), str(tmp_path / "ct2"), "--source-lang", "en", "--target-lang",
                        "de", "--data-bin", str(data_bin)]) == 2
    assert capsys.readouterr().err == f"error: {expected.replace(str(dirs['none']), str(student))}\n"
    assert not (tmp_path / "ct2").exists()


def test_translate_has_export_translates_no_shortlist_option(exported, tmp_path, capsys):
    import json

    from pet_fairseq.export.__main__ import build_parser as export_parser
    from pet_fairseq.translate.cli import build_parser as translate_parser
    from pet_fairseq.translate.cli import main as translate_main

    def no_shortlist(parser):
        if parser._subparsers is not None:  # export: the translate subcommand
            parser = parser._subparsers._group_actions[0].choices["translate"]
        return next((a.default, a.help, type(a).__name__) for a in parser._actions
                    if "--no-shortlist" in a.option_strings)

    assert no_shortlist(translate_parser()) == no_shortlist(export_parser()) == (
        False, "decode over the whole target vocabulary even if the model stores a shortlist", "_StoreTrueAction")

    _, d, dirs, _, data_bin = exported
    recipe = tmp_path / "preprocessing.json"
    recipe.write_text(json.dumps({"source_lang": "de", "target_lang": "en", "tokenizer": "none", "lowercase": False,
                                  "bpe": "none"}), encoding="utf-8")
    text = tmp_path / "in.txt"
    text.write_text("".join(" ".join(d[i] for i in s) + "\n" for s in sources()), encoding="utf-8")
    common = ["--data-bin", str(data_bin), "--recipe", str(recipe), "--beam", "1", "--max-len-b", "10"]
    outputs = {}
    for name, model, extra in (("shortlist", dirs["narrow"], []), ("whole", dirs["narrow"], ["--no-shortlist"]),
                               ("plain", dirs["none"], [])):
        assert translate_main([str(model), str(text), "--output", str(tmp_path / name), *common, *extra]) == 0
        outputs[name] = (tmp_path / name).read_text(encoding="utf-8").splitlines()
    assert len(outputs["plain"]) == len(sources())
    assert outputs["whole"] == outputs["plain"] != outputs["shortlist"]
    capsys.readouterr()
