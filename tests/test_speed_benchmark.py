"""The decode-speed benchmark: forced output lengths, side-by-side timing, ratios, tables, profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pet_fairseq.core.speed import measure_side_by_side
from pet_fairseq.evaluation.decode_profile import CATEGORIES, profile_decoding
from pet_fairseq.evaluation.errors import EvaluationError
from pet_fairseq.evaluation.speed_benchmark import cli, inputs, models, tables, timing
from pet_fairseq.evaluation.translators import FairseqTranslator, OutputLength, decode_pass
from tests.conftest import build, toy_dictionary, toy_task, write_data_dir

TINY = ("--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-embed-dim", "32",
        "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A 200-word dictionary file and 20 source sentences of 3-9 of its words."""
    folder = tmp_path_factory.mktemp("speed")
    dictionary = toy_dictionary(200)
    dictionary.save(str(folder / "dict.txt"))
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(f"w{int(i)}" for i in torch.randint(0, 200, (int(n),), generator=g))
             for n in torch.randint(3, 10, (20,), generator=g)]
    (folder / "source.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "bitext.de").write_text("\n".join(lines[:10]) + "\n", encoding="utf-8")  # the shortlist's bitext
    (folder / "bitext.en").write_text("\n".join(lines[10:]) + "\n", encoding="utf-8")
    return folder / "dict.txt", folder / "source.txt"


def bench_args(corpus, *extra: str):
    parser = cli.build_parser()
    args = parser.parse_args(["--archs", "pet_iwslt_de_en", "--dictionary", str(corpus[0]), "--source-text",
                              str(corpus[1]), "--sentences", "12", "--batch-size", "4", "--latency-sentences", "2",
                              "--beams", "2,1", "--output-length", "6", "--repeats", "1", "--threads", "2",
                              "--profile-sentences", "4", "--shortlist-bitext", str(corpus[0].parent / "bitext"),
                              "--shortlist-per-token", "3", *extra])
    cli.validate_args(parser, args)
    return args


SPECS = [models.ModelSpec("pet", "pet_iwslt_de_en", TINY),
         models.ModelSpec("deep-shallow", "pet_deep_shallow_iwslt_de_en", TINY)]


@pytest.fixture(scope="module")
def report(corpus):
    pytest.importorskip("ctranslate2", reason="ctranslate2 is an optional extra: pip install -e .[ctranslate2]")
    return timing.run(bench_args(corpus, "--ct2-parallel-batches", "1,2"), SPECS)


def test_every_model_and_engine_generates_the_forced_length_in_every_mode(report):
    assert [(row["label"], row["engine"], row["parallel_batches"]) for row in report["models"]] == [
        (label, engine, parallel) for engine, parallels in [("fairseq", [1]), ("ctranslate2", [1, 2]),
                                                            ("ctranslate2-shortlist", [1, 2])]
        for parallel in parallels for label in ("pet", "deep-shallow")]
    assert report["settings"]["shortlist_per_token"] == 3 and report["settings"]["ct2_parallel_batches"] == [1, 2]
    names = [mode["name"] for mode in report["modes"]]
    assert names == ["batch 4, beam 2", "batch 4, greedy", "batch 1, beam 2", "batch 1, greedy"]
    for row in report["models"]:
        for mode in report["modes"]:
            figures = row["modes"][mode["name"]]
            assert figures["sentences"] == mode["sentences"] == (12 if mode["batch_size"] == 4 else 2)
            assert figures["tokens"] == 6 * figures["sentences"]  # 5 tokens + EOS, every model, every engine


def test_ratios_are_to_the_first_model_in_the_first_engine(report):
    reference = report["models"][0]["modes"]
    assert report["reference"] == "pet (fairseq)"
    for row in report["models"]:
        for name, figures in row["modes"].items():
            assert figures["throughput_ratio"] == pytest.approx(
                figures["tokens_per_second"] / reference[name]["tokens_per_second"])
            assert figures["latency_ratio"] == pytest.approx(
                reference[name]["ms_per_sentence"] / figures["ms_per_sentence"])
            assert figures["ms_per_sentence"] == pytest.approx(1000 * figures["median_seconds"] / figures["sentences"])
    assert all(figures["throughput_ratio"] == figures["latency_ratio"] == 1.0 for figures in reference.values())


def test_report_counts_parameters_and_profiles_the_fairseq_models(report):
    pet, deep = report["models"][:2]
    assert deep["unique_parameters"] < pet["unique_parameters"]  # one decoder layer fewer to store
    assert report["models"][2]["stored_parameters"] > 0 and report["models"][2]["disk_bytes"] > 0
    # both CTranslate2 engines decode the same model directory (the shortlist is stored, used by one)
    assert report["models"][6]["disk_bytes"] == report["models"][4]["disk_bytes"] == report["models"][2]["disk_bytes"]
    assert [row["label"] for row in report["profile"]] == ["pet", "deep-shallow"]
    for row in report["profile"]:
        assert set(row["share"]) == set(CATEGORIES)
        assert sum(row["share"].values()) == pytest.approx(1.0)
        assert row["share"]["decoder_layers"] > 0 and row["share"]["encoder"] > 0


def test_tables_have_one_row_per_model_and_engine_and_two_columns_per_mode(report):
    lines = tables.speed_table(report).splitlines()
    assert len(lines) == 2 + 10
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:3] == ["model", "engine", "params"] and len(header) == 3 + 2 * 4
    assert header[3] == "batch 4, beam 2: tok/s" and header[9] == "batch 1, greedy: ms/sent"
    first = [c.strip() for c in lines[2].strip("|").split("|")]
    assert first[1] == "fairseq" and first[4] == first[6] == first[8] == first[10] == "1.00"
    assert [c.strip() for c in lines[4].strip("|").split("|")][1] == "CTranslate2 int8"
    assert [c.strip() for c in lines[6].strip("|").split("|")][1] == "CTranslate2 int8, 2 parallel batches"
    assert [c.strip() for c in lines[8].strip("|").split("|")][1] == "CTranslate2 int8 + shortlist"
    assert [c.strip() for c in lines[10].strip("|").split("|")][1] == "CTranslate2 int8 + shortlist, 2 parallel batches"
    profile = tables.profile_table(report["profile"]).splitlines()
    assert len(profile) == 2 + 2 and profile[0].count("|") == 2 + len(CATEGORIES) + 1
    json.dumps(report)  # the JSON report is plain data


def test_decode_pass_refuses_a_hypothesis_of_another_length():
    class Stub:
        label, engine = "stub", "fake"

        def translate(self, prepared, beam, length):
            return [[5] * n for n in prepared]

    assert decode_pass(Stub(), [[4, 4], [4]], beam=1, length=OutputLength.forced(5)) == (3, 15)
    with pytest.raises(EvaluationError, match=r"stub \(fake\) generated \[4, 5\] tokens per sentence instead of the forced"):
        decode_pass(Stub(), [[4, 3]], beam=1, length=OutputLength.forced(5))
    assert decode_pass(Stub(), [[4, 3]], beam=1, length=OutputLength(max_len_b=10)) == (2, 9)  # free length: counted


def test_output_length_limits():
    forced = OutputLength.forced(31)
    assert (forced.min_len, forced.max_len_b, forced.forced_tokens, forced.max_tokens(100)) == (30, 30, 31, 30)
    free = OutputLength(min_len=1, max_len_a=1.2, max_len_b=10)
    assert free.forced_tokens is None and free.max_tokens(10) == 22
    with pytest.raises(ValueError, match="must be >= 2"):
        OutputLength.forced(1)


def test_side_by_side_timing_interleaves_the_decoders():
    calls = []

    def decoder(name, work):
        return lambda: calls.append(name) or work

    ticks = iter(range(100))
    results = measure_side_by_side([decoder("a", (2, 10)), decoder("b", (2, 12))], n_repeats=2, n_warmup=1,
                                   clock=lambda: float(next(ticks)))
    assert calls == ["a", "b", "a", "b", "a", "b"]  # warm-ups, then rounds of a, b
    assert [(r.sentences, r.tokens, r.seconds) for r in results] == [(2, 10, [1.0, 1.0]), (2, 12, [1.0, 1.0])]


def test_fairseq_translator_pads_like_fairseq_and_profile_restores_the_model():
    d = toy_dictionary(50)
    model = build("pet_deep_shallow_iwslt_de_en", task=toy_task(d), **dict(
        encoder_embed_dim=16, encoder_ffn_embed_dim=32, decoder_embed_dim=16, decoder_ffn_embed_dim=32))
    translator = FairseqTranslator("m", model, toy_task(d))
    sample = translator.prepare([[5, 6, 7], [8]])
    assert sample["net_input"]["src_tokens"].tolist() == [[5, 6, 7, d.eos()], [d.pad(), d.pad(), 8, d.eos()]]
    assert sample["net_input"]["src_lengths"].tolist() == [4, 2]
    seconds = profile_decoding(model, lambda: decode_pass(translator, [sample], 3, OutputLength.forced(4)))
    assert sum(seconds[c] for c in CATEGORIES) == pytest.approx(seconds["total"])
    assert min(seconds[c] for c in CATEGORIES if c != "decoder_other") > 0
    assert "forward" not in vars(model.encoder) and "get_normalized_probs" not in vars(model)


def test_dictionary_is_joined_sorted_by_count_and_padded(tmp_path):
    (tmp_path / "valid.de").write_text("a b b\n", encoding="utf-8")
    (tmp_path / "test.en").write_text("b c\n", encoding="utf-8")
    d = inputs.count_dictionary(inputs.bpe_files(tmp_path))
    assert d.symbols[4:7] == ["b", "a", "c"] and len(d) % 8 == 0
    with pytest.raises(EvaluationError, match="no BPE'd valid/test files in"):
        inputs.bpe_files(tmp_path / "missing")


def test_bad_arguments_are_clear_errors(corpus, capsys):
    for argv, message in [
        (["--archs", "pet_iwslt_de_en,pet_iwslt_de_enn"], "unknown architecture 'pet_iwslt_de_enn'; did you mean"),
        (["--archs", "pet_iwslt_de_en", "--engines", "onnx"], "choose from fairseq, ctranslate2"),
        (["--archs", "pet_iwslt_de_en", "--beams", "5,x"], "--beams '5,x'"),
        (["--archs", "pet_iwslt_de_en", "--dictionary", "/nonexistent/dict.txt"], "does not exist"),
        (["--archs", "pet_iwslt_de_en", "--output-length", "1"], "must be >= 2"),
        (["--archs", "pet_iwslt_de_en", "--shortlist-bitext", "/nonexistent/train"],
         "/nonexistent/train.de, /nonexistent/train.en not found; pass --shortlist-bitext PREFIX"),
        (["--archs", "pet_iwslt_de_en", "--dictionary", str(corpus[0])], "may not match it: pass --shortlist-bitext"),
        (["--archs", "pet_iwslt_de_en", "--threads", "2", "--ct2-parallel-batches", "1,3"],
         "--ct2-parallel-batches 1,3 with --threads 2: 3 parallel batches cannot share 2 threads evenly"),
        (["--archs", "pet_iwslt_de_en", "--ct2-parallel-batches", "0"], "whole numbers >= 1"),
        (["--archs", "pet_iwslt_de_en", "--threads", "-1"], "--threads must be at least 0 (0 = one per core), got -1"),
    ]:
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert message in capsys.readouterr().err
    assert cli.main(["--archs", "pet_iwslt_de_en", "--bpe-dir", "/nonexistent/bpe"]) == 2
    with pytest.raises(EvaluationError, match="has 20 non-empty lines; 50 are needed"):
        inputs.read_sources(corpus[1], toy_dictionary(200), 50)


def test_a_failed_conversion_is_an_evaluation_error_carrying_the_exports_message(tmp_path):
    pytest.importorskip("ctranslate2", reason="ctranslate2 is an optional extra: pip install -e .[ctranslate2]")
    data_bin = write_data_dir(tmp_path / "data-bin", toy_dictionary(200))
    model, _, cfg = models.build_random_model(SPECS[0], data_bin, ("de", "en"), seed=0)
    message = (r"^pet: the CTranslate2 conversion failed: the dictionaries' folder \S*nowhere does not exist; "
               r"pass --data-bin")
    with pytest.raises(EvaluationError, match=message):
        models.export_ctranslate2(model, cfg, SPECS[0], tmp_path, tmp_path / "nowhere", ("de", "en"), "int8")


def test_ctranslate2_worker_failures_are_evaluation_errors(tmp_path):
    pytest.importorskip("ctranslate2", reason="ctranslate2 is an optional extra: pip install -e .[ctranslate2]")
    from pet_fairseq.evaluation.translators import CTranslate2Translator

    d = toy_dictionary(200)
    with pytest.raises(EvaluationError, match=r"the CTranslate2 worker could not load \S*nowhere \(exit code 1"):
        CTranslate2Translator("pet", str(tmp_path / "nowhere"), d, d, threads=1)
    with pytest.raises(EvaluationError, match="pet: 2 parallel batches cannot share 3 threads evenly"):
        CTranslate2Translator("pet", str(tmp_path / "nowhere"), d, d, threads=3, parallel_batches=2)
