"""Fast unit tests of pet_fairseq.evaluation and the core modules it builds on: accounting, stripping, timing,
BLEU, bad inputs, report."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from torch import nn

from pet_fairseq.core import bleu, checks
from pet_fairseq.core.checkpoint import read_checkpoint, strip_for_inference
from pet_fairseq.core.errors import InputError
from pet_fairseq.core.postprocess import build_bpe_decoder, build_detokenizer
from pet_fairseq.core.speed import SpeedResult, measure_speed, speed_ratio
from pet_fairseq.evaluation import (
    EvaluationError,
    compare,
    count_unique_elements,
    memory,
    ratios,
    report,
    unique_parameter_count,
)

D, H, V = 32, 48, 50  # model dim, hidden dim, vocabulary


class SharedNet(nn.Module):
    """One Linear applied twice (registered under two names) and an embedding tied to the output layer."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.block = nn.Linear(D, D)
        self.block_again = self.block  # the same module, e.g. a PET layer reused at depth 2
        self.ffn = nn.Linear(D, H)
        self.out = nn.Linear(H, V)
        self.proj = nn.Linear(D, V, bias=False)
        self.proj.weight = self.embed.weight  # tied Parameter under a second attribute

    def forward(self, tokens):
        x = self.block_again(self.block(self.embed(tokens)))
        return self.out(self.ffn(x)) + self.proj(x)


UNIQUE = V * D + (D * D + D) + (D * H + H) + (H * V + V)  # embed (= proj), block once, ffn, out
REGISTERED = UNIQUE + (D * D + D) + V * D  # block registered twice, embedding used as proj


# --- parameter and byte accounting -------------------------------------------------------------

def test_unique_parameters_count_shared_modules_and_tied_weights_once():
    net = SharedNet()
    assert unique_parameter_count(net) == UNIQUE == 6_690  # 1,600 + 1,056 + 1,584 + 2,450
    assert memory.registered_parameters(net) == REGISTERED
    # ``parameters()`` already dedupes by object; a state_dict lists every name
    assert sum(v.numel() for v in net.state_dict().values()) == REGISTERED


def test_unique_parameters_dedupe_views_of_one_storage():
    flat = torch.zeros(100)
    assert count_unique_elements([flat[:60], flat[40:]]) == 100  # overlapping views: the union
    assert count_unique_elements([flat[:10], flat[:10], flat[90:]]) == 20
    assert count_unique_elements([flat.view(10, 10).t()]) == 100  # non-contiguous: its full span
    assert count_unique_elements([torch.zeros(3), torch.zeros(3)]) == 6  # equal values, not shared


def _fake_checkpoint(net: nn.Module, train_dir: Path | str = "/nonexistent/train-bin") -> dict:
    state = net.state_dict()
    adam = {i: {"step": torch.tensor(5.0), "exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p)}
            for i, p in enumerate(net.parameters())}
    return {
        "args": None,
        "cfg": {"task": {"_name": "translation", "data": str(train_dir), "source_lang": "de", "target_lang": "en"},
                "model": {"_name": "transformer"}},
        "model": state,
        "criterion": {"kd_projection.weight": torch.randn(64, 64)},
        "last_optimizer_state": {"state": adam, "param_groups": [{"lr": 1e-3}]},
        "optimizer_history": [{"criterion_name": "KD", "optimizer_name": "Adam", "lr_scheduler_state": {"best": 3.0},
                               "num_updates": 5}],
        "extra_state": {"train_iterator": {"epoch": 2}, "metrics": {"train": [1, 2, 3]}, "best": 3.0},
        "task_state": {},
    }


def test_strip_for_inference_drops_training_state_and_keeps_sharing(tmp_path):
    net = SharedNet()
    torch.save(_fake_checkpoint(net), tmp_path / "full.pt")
    size = strip_for_inference(tmp_path / "full.pt", tmp_path / "inference.pt")
    assert size == (tmp_path / "inference.pt").stat().st_size
    stripped = torch.load(tmp_path / "inference.pt", map_location="cpu")
    assert set(stripped) == {"args", "cfg", "model", "task_state", "optimizer_history", "extra_state"}
    assert stripped["optimizer_history"] == [{"criterion_name": "KD", "optimizer_name": "Adam",
                                              "lr_scheduler_state": {"best": 3.0}, "num_updates": 5}]
    assert stripped["extra_state"] == {"train_iterator": {"epoch": 2}}
    model = stripped["model"]
    assert all(torch.equal(model[k], v) for k, v in net.state_dict().items())
    assert model["proj.weight"].data_ptr() == model["embed.weight"].data_ptr()  # still one tensor
    assert model["block_again.weight"].data_ptr() == model["block.weight"].data_ptr()
    # torch.save writes each storage once: 4 bytes per unique fp32 parameter, plus the zip
    # container (~64-byte aligned records with local + central headers, ~200 B per storage, 10
    # storages here) and the pickled dict structure/config (< 2 KiB). 4 KiB covers that with
    # margin, while one duplicated tied embedding would add 6.4 KB and the Adam moments 8 x UNIQUE.
    assert 4 * UNIQUE <= size <= 4 * UNIQUE + 4096
    assert (tmp_path / "full.pt").stat().st_size > 3 * 4 * UNIQUE  # the optimizer state was there


def test_stripped_fairseq_transformer_loads_with_fairseq(tmp_path):
    """The stripped file is still a checkpoint fairseq can build the model from."""
    from fairseq import checkpoint_utils
    from fairseq.data import Dictionary
    from fairseq.models.transformer import TransformerModel, base_architecture
    from fairseq.tasks.translation import TranslationConfig, TranslationTask

    dictionary = Dictionary()
    for i in range(40):
        dictionary.add_symbol(f"w{i}")
    data = tmp_path / "bin"
    data.mkdir()
    for lang in ("de", "en"):
        dictionary.save(str(data / f"dict.{lang}.txt"))
    args = Namespace(arch="transformer", encoder_layers=1, decoder_layers=1, encoder_embed_dim=16,
                     decoder_embed_dim=16, encoder_ffn_embed_dim=32, decoder_ffn_embed_dim=32,
                     encoder_attention_heads=2, decoder_attention_heads=2, share_all_embeddings=True)
    base_architecture(args)
    task = TranslationTask(TranslationConfig(data=str(data), source_lang="de", target_lang="en"),
                           dictionary, dictionary)
    model = TransformerModel.build_model(args, task)
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    cfg = convert_namespace_to_omegaconf(Namespace(**vars(args), task="translation", data=str(data),
                                                   source_lang="de", target_lang="en", _name="transformer"))
    ckpt = {"cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "model": model.state_dict(),
            "last_optimizer_state": {"x": torch.zeros(1000)}, "criterion": {}, "optimizer_history": [
                {"criterion_name": "x", "optimizer_name": "y", "lr_scheduler_state": {}, "num_updates": 0}],
            "extra_state": {"train_iterator": None}}
    torch.save(ckpt, tmp_path / "full.pt")
    strip_for_inference(tmp_path / "full.pt", tmp_path / "inference.pt")
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(tmp_path / "inference.pt")],
                                                                 arg_overrides={"data": str(data)})
    assert unique_parameter_count(models[0]) == unique_parameter_count(model)
    assert unique_parameter_count(model) < sum(v.numel() for v in model.state_dict().values()
                                               if v.is_floating_point() and v.numel() > 1)


# --- speed -----------------------------------------------------------------------------------

class FakeClock:
    """Returns the given instants in order and records that it was read."""

    def __init__(self, instants):
        self.instants = list(instants)
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return self.instants.pop(0)


def test_measure_speed_warms_up_then_times_each_repeat_and_takes_the_median():
    calls = []

    def decode():
        calls.append("decode")
        return 40, 400

    clock = FakeClock([0.0, 2.0, 10.0, 14.0, 20.0, 21.0])  # passes of 2 s, 4 s, 1 s
    result = measure_speed(decode, n_repeats=3, n_warmup=2, clock=clock,
                           warmup_fn=lambda: calls.append("warmup"))
    assert calls == ["warmup", "warmup", "decode", "decode", "decode"]
    assert clock.reads == 6  # only the timed passes are timed
    assert result.seconds == [2.0, 4.0, 1.0]
    assert result.median_seconds == 2.0
    assert (result.sentences_per_second, result.tokens_per_second) == (20.0, 200.0)
    assert result.warmup_calls == 2


def test_measure_speed_warms_up_with_decode_fn_by_default_and_even_repeats_average_the_middle():
    count = {"n": 0}

    def decode():
        count["n"] += 1
        return 10, 50

    result = measure_speed(decode, n_repeats=2, n_warmup=1, clock=FakeClock([0, 1, 1, 4]))
    assert count["n"] == 3
    assert result.median_seconds == 2.0 and result.sentences_per_second == 5.0


def test_measure_speed_rejects_passes_that_did_different_work():
    work = iter([(10, 50), (10, 51)])
    with pytest.raises(RuntimeError, match="different amounts of work"):
        measure_speed(lambda: next(work), n_repeats=2, n_warmup=0, clock=FakeClock([0, 1, 1, 2]))
    with pytest.raises(ValueError):
        measure_speed(lambda: (1, 1), n_repeats=0)


def test_speed_ratio_is_relative_throughput_and_round_trips_through_json():
    teacher = SpeedResult(seconds=[4.0, 2.0, 3.0], sentences=30, tokens=300, warmup_calls=1)  # 10 sent/s
    student = SpeedResult(seconds=[1.0, 1.5, 0.5], sentences=30, tokens=240, warmup_calls=1)  # 30 sent/s
    assert speed_ratio(student, teacher) == {"sentences_per_second": 3.0, "tokens_per_second": 2.4}
    assert speed_ratio(teacher, teacher) == {"sentences_per_second": 1.0, "tokens_per_second": 1.0}
    again = SpeedResult.from_dict(json.loads(json.dumps(student.to_dict())))
    assert again == student


def _row(label, params, size, seconds, bleu_detok, bleu_tok, status="ok"):
    return {"label": label, "status": status, "error": None if status == "ok" else "broken",
            "memory": {"unique_parameters": params, "inference_checkpoint_bytes": size, "peak_rss_bytes": 100,
                       "peak_gpu_bytes": None},
            "speed": SpeedResult(seconds=[seconds], sentences=10, tokens=100, warmup_calls=1).to_dict(),
            "bleu": {"detok": bleu_detok, "tok": bleu_tok}}


def test_ratios_are_relative_to_the_first_model():
    rows = [_row("teacher", 1000, 4000, 2.0, 30.0, 32.0), _row("pet", 250, 1100, 0.5, 28.5, 31.0),
            _row("bad", 0, 0, 1.0, 0, 0, status="failed")]
    ratios.add_ratios(rows)
    teacher, pet, bad = (row["ratios"] for row in rows)
    assert teacher["unique_parameters"] == teacher["sentences_per_second"] == 1.0
    assert teacher["bleu_detok_delta"] == 0.0 and teacher["peak_gpu_bytes"] is None
    assert pet["unique_parameters"] == 0.25 and pet["inference_checkpoint_bytes"] == 0.275
    assert pet["sentences_per_second"] == 4.0 and pet["tokens_per_second"] == 4.0
    assert pet["bleu_detok_delta"] == pytest.approx(-1.5) and pet["bleu_tok_delta"] == pytest.approx(-1.0)
    assert bad is None
    rows[0]["status"] = "failed"
    ratios.add_ratios(rows)
    assert all(row["ratios"] is None for row in rows)  # no reference, no ratios


# --- BLEU and text ---------------------------------------------------------------------------

def test_tok_bleu_is_lowercased_whitespace_bleu_and_detok_bleu_is_cased_13a():
    refs = ["The cat sat on the mat .", "A dog runs in the park ."]
    assert bleu.tok_bleu([r.lower() for r in refs], refs).score == pytest.approx(100.0)
    assert bleu.detok_bleu([r.lower() for r in refs], refs).score < 100.0
    tok = bleu.tok_bleu(["the cat sat on a mat .", "a dog runs in the park ."], refs)
    assert 0 < tok.score < 100 and "tok:none" in tok.signature and "case:lc" in tok.signature
    assert "tok:13a" in bleu.detok_bleu(refs, refs).signature
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        bleu.tok_bleu(refs, refs[:1])


def test_bpe_removal_and_moses_detokenization(tmp_path):
    codes = tmp_path / "codes"
    codes.write_text("#version: 0.2\ne i\n")
    unbpe = build_bpe_decoder("subword_nmt", bpe_codes=str(codes))
    assert unbpe("ein@@ e kat@@ ze sitzt .") == "eine katze sitzt ."
    assert build_bpe_decoder(None)("ein@@ e") == "ein@@ e"
    detok = build_detokenizer("moses", "en")
    assert detok("it &apos;s a &quot; test &quot; , isn &apos;t it ?") == 'it\'s a "test", isn\'t it?'
    assert build_detokenizer("none", "en")("a , b") == "a , b"


def test_text_files_round_trip(tmp_path):
    bleu.write_lines(tmp_path / "x.txt", ["a b", "", "c"])
    assert bleu.read_lines(tmp_path / "x.txt") == ["a b", "", "c"]


# --- bad inputs ------------------------------------------------------------------------------

def test_non_checkpoint_files_are_named_in_a_clear_error(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    with pytest.raises(InputError, match=r"notes\.pt is not a fairseq checkpoint \(torch\.load failed"):
        read_checkpoint(text)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "weights.pt")
    with pytest.raises(InputError, match=r"weights\.pt is not a fairseq checkpoint: expected 'model' and 'cfg'"):
        read_checkpoint(tmp_path / "weights.pt")
    torch.save(torch.zeros(2), tmp_path / "tensor.pt")
    with pytest.raises(InputError, match="holds a Tensor"):
        read_checkpoint(tmp_path / "tensor.pt")
    with pytest.raises(InputError, match="missing.pt does not exist"):
        read_checkpoint(tmp_path / "missing.pt")


def _data_bin(path: Path, symbols: list[str], subsets=("test",)) -> Path:
    path.mkdir(parents=True)
    for lang in ("de", "en"):
        (path / f"dict.{lang}.txt").write_text("".join(f"{s} 1\n" for s in symbols))
        for subset in subsets:
            for ext in ("bin", "idx"):
                (path / f"{subset}.de-en.{lang}.{ext}").write_bytes(b"")
    return path


def test_missing_subset_names_the_files_looked_for_and_the_subsets_present(tmp_path):
    data = _data_bin(tmp_path / "bin", ["a", "b"], subsets=("train", "test"))
    checks.check_subset(data, "test", "de", "en")
    with pytest.raises(InputError) as err:
        checks.check_subset(data, "valid", "de", "en")
    message = str(err.value)
    for name in ("valid.de-en.de.bin", "valid.de-en.de.idx", "valid.de-en.en.bin", "valid.en-de.en.idx"):
        assert name in message
    assert "Subsets present: test, train" in message


def test_dictionary_mismatch_says_which_side_and_what_to_do(tmp_path):
    train = _data_bin(tmp_path / "train-bin", ["a", "b", "c"])
    (train / "dict.en.txt").write_text("a 1\nx 1\nc 1\n")  # target side differs at symbol 2
    data = _data_bin(tmp_path / "bin", ["a", "b", "c"])
    net = nn.Module()
    net.encoder, net.decoder = nn.Module(), nn.Module()
    net.encoder.embed_tokens, net.decoder.embed_tokens = nn.Embedding(7, 4), nn.Embedding(7, 4)  # 4 specials + 3
    ckpt = _fake_checkpoint(net, train_dir=train)
    with pytest.raises(InputError) as err:
        checks.check_dictionaries(ckpt, data, "de", "en")
    message = str(err.value)
    assert "target side" in message and "source side" not in message
    assert "first difference at index 5: checkpoint has 'x', data-bin has 'b'" in message
    assert f"fairseq-preprocess --srcdict {train}/dict.de.txt --tgtdict {train}/dict.en.txt" in message
    # without the training data-bin, the embedding sizes still catch a different dictionary
    small = _fake_checkpoint(net, train_dir=tmp_path / "gone")
    small["model"]["encoder.embed_tokens.weight"] = torch.zeros(6, 4)
    assert checks.dictionary_problems(small, data, "de", "en") == [
        f"source side: the model's source embedding has 6 rows but {data / 'dict.de.txt'} gives a 7-symbol dictionary"]
    assert checks.dictionary_problems(_fake_checkpoint(net, train_dir=data), data, "de", "en") == []


def test_languages_come_from_options_then_checkpoint_then_data_bin(tmp_path):
    data = _data_bin(tmp_path / "bin", ["a"])
    ckpt = _fake_checkpoint(SharedNet())
    assert checks.resolve_languages(ckpt, data, None, None) == ("de", "en")
    assert checks.resolve_languages(ckpt, data, "en", "de") == ("en", "de")
    ckpt["cfg"]["task"].update(source_lang=None, target_lang=None)
    assert checks.resolve_languages(ckpt, data, None, None) == ("de", "en")  # from test.de-en.*


def test_compare_reports_every_failed_model_and_exits_non_zero(tmp_path, capsys):
    data = _data_bin(tmp_path / "bin", ["a", "b"])
    (tmp_path / "junk.pt").write_text("junk")
    torch.save(_fake_checkpoint(SharedNet(), train_dir=data), tmp_path / "nosubset.pt")
    code = compare.main(["--data-bin", str(data), "--subset", "valid", "--out-dir", str(tmp_path / "out"),
                         "--labels", "junk,nosubset", str(tmp_path / "junk.pt"), str(tmp_path / "nosubset.pt")])
    assert code == 1
    out = capsys.readouterr().out
    assert "| junk | FAILED: " in out and "is not a fairseq checkpoint" in out
    assert "| nosubset | FAILED: subset 'valid' (de-en) not found" in out
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [m["status"] for m in saved["models"]] == ["failed", "failed"]
    assert {"torch", "fairseq", "python", "cpu_model", "threads", "device"} <= set(saved["environment"])
    assert not (tmp_path / "out" / "report.png").exists()  # nothing to plot


def test_compare_checks_each_models_direction(tmp_path, capsys, monkeypatch):
    """A model whose direction contradicts --source-lang/--target-lang is a FAILED row; models of two directions are
    refused before any decoding."""
    data = _data_bin(tmp_path / "bin", ["a", "b"], subsets=("test",))
    de_en, en_de = _fake_checkpoint(SharedNet(), train_dir=data), _fake_checkpoint(SharedNet(), train_dir=data)
    en_de["cfg"]["task"].update(source_lang="en", target_lang="de")
    torch.save(de_en, tmp_path / "de_en.pt")
    torch.save(en_de, tmp_path / "en_de.pt")
    decoded = []

    def fake_decoder(job, _path, **_kwargs):  # what would be decoded; no decoding in a unit test
        decoded.append((job["label"], job["source_lang"], job["target_lang"]))
        raise EvaluationError("not decoded in this test")

    monkeypatch.setattr(compare, "run_decoder", fake_decoder)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    base = ["--data-bin", str(data), "--out-dir", str(tmp_path / "out"), "--labels", "a,b"]
    assert compare.main(base + ["--source-lang", "en", "--target-lang", "de", str(tmp_path / "de_en.pt"),
                                str(tmp_path / "de_en.pt")]) == 1
    out = capsys.readouterr().out
    assert out.count(f"FAILED: {tmp_path / 'de_en.pt'} translates de->en, but --source-lang en --target-lang de asks "
                     "for en->de") == 2 and decoded == []
    with pytest.raises(SystemExit) as exit_:  # two directions: refused before the first model is decoded
        compare.main(base + [str(tmp_path / "de_en.pt"), str(tmp_path / "en_de.pt")])
    assert exit_.value.code == 2 and decoded == []
    assert capsys.readouterr().err.splitlines()[-1] == (
        "pet-compare: error: the models translate 2 directions (de->en: a; en->de: b); the models of one comparison "
        "must translate one direction: compare each direction separately")
    (tmp_path / "junk.pt").write_text("junk")  # a model that cannot be read does not stop the others
    assert compare.main(base[:-1] + ["a,b,c", str(tmp_path / "de_en.pt"), str(tmp_path / "junk.pt"),
                                     str(tmp_path / "de_en.pt")]) == 1
    out = capsys.readouterr().out
    assert decoded == [("a", "de", "en"), ("c", "de", "en")] and "| b | FAILED: " in out
    before[(tmp_path / "junk.pt").name] = b"junk"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_compare_refuses_a_missing_bpe_model_and_an_out_dir_that_is_a_file(tmp_path, capsys):
    """A missing --bpe-codes file and an --out-dir that is a file are refused before any decoding."""
    data = _data_bin(tmp_path / "bin", ["a"])
    afile = tmp_path / "five.de"
    afile.write_text("ein hund\n")
    cases = [
        (["--bpe", "subword_nmt", "--bpe-codes", str(tmp_path / "nope.code")],
         f"--bpe-codes {tmp_path / 'nope.code'} is not a file; pass the subword-nmt codes file the data was "
         "prepared with"),
        (["--bpe", "sentencepiece", "--sentencepiece-model", str(tmp_path / "nope.model")],
         f"--sentencepiece-model {tmp_path / 'nope.model'} is not a file; pass the sentencepiece model the data was "
         "prepared with"),
        (["--out-dir", str(afile)], f"--out-dir {afile} is a file; pass a folder (it is created if missing)"),
        (["--out-dir", str(afile / "sub")],
         f"--out-dir {afile / 'sub'} lies under {afile}, which is a file; pass a folder (it is created if missing)"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_:
            compare.main(["--data-bin", str(data), *extra, "x.pt"])
        assert exit_.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == f"pet-compare: error: {message}"
    assert afile.read_text() == "ein hund\n" and sorted(p.name for p in tmp_path.iterdir()) == ["bin", "five.de"]


# --- command line and report -----------------------------------------------------------------

def test_default_labels_use_the_run_folder_for_fairseq_checkpoint_names():
    assert compare.default_labels(["ckpt/teacher/checkpoint_best.pt", "ckpt/pet/checkpoint_best.pt",
                                   "students/kron.pt"]) == ["teacher", "pet", "kron"]
    assert compare.default_labels(["a/x.pt", "b/x.pt"]) == ["x-1", "x-2"]


def test_ctranslate2_parallel_batches_must_divide_the_threads(tmp_path, capsys):
    parser = compare.build_parser()
    args = parser.parse_args(["--data-bin", str(tmp_path), "--threads", "2", "--ct2-parallel-batches", "3", "x.pt"])
    with pytest.raises(SystemExit):
        compare.validate_args(parser, args)
    assert "--parallel-batches 3 with --threads 2: 3 parallel batches cannot share 2 threads evenly" in \
        capsys.readouterr().err
    args = parser.parse_args(["--data-bin", str(tmp_path), "--threads", "2", "--ct2-parallel-batches", "2", "x.pt"])
    compare.validate_args(parser, args)
    assert compare.settings(args)["parallel_batches"] == 2


def test_labels_must_match_the_models(tmp_path):
    args = compare.build_parser().parse_args(["--data-bin", str(tmp_path), "--labels", "a", "x.pt", "y.pt"])
    with pytest.raises(EvaluationError, match="needs 2 distinct"):
        compare.parse_labels(args)


def test_markdown_table_has_labelled_bleu_columns_ratios_and_failed_rows():
    rows = [_row("teacher", 1_000_000, 4 * 2**20, 2.0, 30.0, 32.0), _row("pet", 250_000, 2**20, 0.5, 28.5, 31.0),
            _row("bad", 0, 0, 1.0, 0, 0, status="failed")]
    rows[2]["error"] = "a | b"
    ratios.add_ratios(rows)
    lines = report.markdown_table(rows).splitlines()
    assert "BLEU (sacrebleu detok)" in lines[0] and "BLEU (tok, IWSLT-style)" in lines[0]
    cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert cells == ["pet", "28.50", "31.00", "250,000", "1.00", "0", "20.0", "200", "0.250", "0.250", "1.00", "4.00",
                     "4.00", "-1.50", "-1.00"]  # ... params ×, size ×, RSS ×, speed × (sent/s), speed × (tok/s), Δ BLEU
    assert lines[4].startswith("| bad | FAILED: a \\| b |")
    assert all(line.count("|") - line.count("\\|") == len(report.COLUMNS) + 1 for line in lines)


def test_plot_writes_a_png(tmp_path):
    rows = [_row("teacher", 1_000_000, 4, 2.0, 30.0, 32.0), _row("pet", 250_000, 1, 0.5, 28.5, 31.0)]
    assert report.plot(tmp_path / "p.png", rows)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


# --- training step time from fairseq-train logs -------------------------------------------------

SIMPLE_LOG = """\
2026-11-28 21:14:41 | INFO | train_inner | epoch 001:     20 / 126 loss=12.5, num_updates=20, train_wall=36
2026-11-28 21:20:21 | INFO | train | epoch 001 | loss 0.007 | nll_loss 14.136 | wps 1304 | num_updates 126 | lr 0.00126 | train_wall 324 | wall 334
2026-11-28 21:21:08 | INFO | train | epoch 002 | loss 0.005 | nll_loss 12.1 | wps 1310 | num_updates 150 | lr 0.00122 | train_wall 60 | wall 398
"""


def test_training_cost_sums_epochs_of_a_simple_log():
    from pet_fairseq.core.training_cost import training_cost

    cost = training_cost(SIMPLE_LOG)
    assert (cost.updates, cost.train_seconds) == (150, 384.0)
    assert cost.seconds_per_update == pytest.approx(2.56)


def test_training_cost_reads_json_logs_and_rejects_logs_without_epochs(tmp_path, capsys):
    from pet_fairseq.core.training_cost import training_cost
    from pet_fairseq.evaluation.training_cost import main

    line = '2026-11-28 | INFO | train | {"epoch": 1, "train_loss": "9.3", "train_num_updates": "40", "train_train_wall": "20"}'
    assert training_cost(line).seconds_per_update == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no end-of-epoch"):
        training_cost("| train_inner | epoch 001: loss=3")
    (tmp_path / "a.log").write_text(line + "\n")
    (tmp_path / "b.log").write_text(SIMPLE_LOG)
    assert main([f"plain={tmp_path / 'a.log'}", f"kd={tmp_path / 'b.log'}"]) == 0
    out = capsys.readouterr().out
    assert "| plain | 40 | 20 | 0.50 | 1.00 |" in out and "| kd | 150 | 384 | 2.56 | 5.12 |" in out


def test_runaway_hypotheses_are_those_at_the_limit_or_over_twice_their_source():
    from types import SimpleNamespace

    from pet_fairseq.core.decode import runaway_ids

    pad = 1
    src = torch.tensor([[pad, pad, 5, 6, 2], [5, 6, 7, 8, 2], [5, 6, 7, 8, 2]])  # sources of 2, 4, 4 tokens + EOS
    decoder = SimpleNamespace(generator=SimpleNamespace(max_len_a=2.0, max_len_b=10, max_len=1024),
                              task=SimpleNamespace(source_dictionary=SimpleNamespace(pad=lambda: pad)))
    sample = {"id": torch.tensor([7, 8, 9]), "net_input": {"src_tokens": src}}
    hypo = lambda n: [{"tokens": torch.arange(n + 1)}]  # noqa: E731  n tokens + EOS
    # limit = 2 * 5 + 10 = 20; sentence 7: 13 > max(4, 12); 8: 14 <= max(8, 14); 9: 20 at the limit
    assert runaway_ids(decoder, sample, [hypo(13), hypo(14), hypo(20)]) == [7, 9]
    assert runaway_ids(decoder, sample, [hypo(12), hypo(3), hypo(14)]) == []


def test_the_ctranslate2_worker_imports_neither_torch_nor_fairseq(tmp_path):
    """Run as a file (``python -P``), the worker imports the core's torch-free modules and nothing heavier."""
    import subprocess
    import sys

    worker = Path(__file__).resolve().parents[1] / "pet_fairseq" / "evaluation" / "ct2_worker.py"
    proc = subprocess.run([sys.executable, "-P", "-X", "importtime", str(worker), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--serve MODEL_DIR" in proc.stdout, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert {"pet_fairseq.core.speed", "pet_fairseq.core.ctranslate2.decoding", "pet_fairseq.core.ctranslate2.model_dir"} <= imported
    heavy = sorted(name for name in imported if name.split(".")[0] in ("torch", "fairseq", "numpy"))
    assert not heavy, heavy
