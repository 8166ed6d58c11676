"""Export (issue 9): unrolled checkpoints compute the student's function as a plain fairseq transformer."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from fairseq.models import ARCH_MODEL_REGISTRY
from fairseq.models.transformer import TransformerModel
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from pet_fairseq.core.ctranslate2.decoding import make_batches, max_decoding_length
from pet_fairseq.core.errors import ExportError, InputError
from pet_fairseq.core.unroll import unroll_checkpoint, unroll_state
from pet_fairseq.export.__main__ import main as export_main
from pet_fairseq.modules.reused_layer import ReusedLayer
from tests.conftest import make_checkpoint, toy_dictionary, write_data_dir
from tests.test_pet_transformer import batch, peaky

DIMS = ["--encoder-embed-dim", "48", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "96",
        "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]
VOCAB = 200


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_data_dir(tmp_path_factory.mktemp("dicts"), toy_dictionary(VOCAB))


def student(tmp_path, data_dir, *options, name="student.pt", arch="pet_iwslt_de_en"):
    """A real fairseq checkpoint (cfg.model is an argparse.Namespace) plus training-only state."""
    path, model, cfg = make_checkpoint(tmp_path / name, data_dir, arch, *DIMS, *options, seed=3)
    peaky(model)  # sharper weights: differences between the models cannot hide in a flat softmax
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # no two vectors equal by initialisation (layer norms start as ones/zeros)
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    state = torch.load(path)
    state["model"] = model.state_dict()
    state["criterion"] = {"encoder_projections.0.weight": torch.ones(4, 4)}  # the KD projections
    state["last_optimizer_state"] = {"state": {0: {"exp_avg": torch.ones(3)}}}
    torch.save(state, path)
    return path, model, state


def standard_model(unrolled: dict) -> TransformerModel:
    """Build the unrolled checkpoint with fairseq's own transformer, as fairseq-generate would."""
    args = argparse.Namespace(**unrolled["cfg"]["model"])
    d = toy_dictionary(VOCAB)
    model = ARCH_MODEL_REGISTRY[args.arch].build_model(args, TranslationTask(TranslationConfig(), d, d))
    model.load_state_dict(unrolled["model"], strict=True)
    return model.eval()


def layer_parameters(e: int, ef: int, d: int, df: int) -> tuple[int, int]:
    linear = lambda i, o: i * o + o  # noqa: E731
    encoder = 4 * linear(e, e) + linear(e, ef) + linear(ef, e) + 2 * 2 * e
    decoder = 4 * linear(d, d) + linear(d, d) + 2 * linear(e, d) + linear(d, d) + linear(d, df) + linear(df, d) + 3 * 2 * d
    return encoder, decoder


PLANS = [("0,1,0~,1~", "0,1,0~,1~"), ("0,0,0", "0,0"), ("0,1,2", "0,1,2,3")]


@pytest.mark.parametrize("query_sharing", [True, False], ids=["query-shared", "no-query-sharing"])
@pytest.mark.parametrize("plans", PLANS, ids=["pet", "all-shared", "unshared"])
def test_unrolled_model_equals_student_and_has_depth_times_layer_parameters(tmp_path, data_dir, plans, query_sharing):
    options = ["--encoder-layer-plan", plans[0], "--decoder-layer-plan", plans[1]]
    options += [] if query_sharing else ["--no-decoder-query-sharing"]
    _, pet, state = student(tmp_path, data_dir, *options)
    unrolled, summary = unroll_state(state)
    plain = standard_model(unrolled)

    assert type(plain) is TransformerModel and not any(isinstance(m, ReusedLayer) for m in plain.modules())
    depth_e, depth_d = len(plans[0].split(",")), len(plans[1].split(","))
    assert (len(plain.encoder.layers), len(plain.decoder.layers)) == (depth_e, depth_d)
    src, src_len = batch(vocab=VOCAB)
    prev = batch(vocab=VOCAB, seed=7)[0]
    with torch.no_grad():
        expected, got = pet(src, src_len, prev)[0], plain(src, src_len, prev)[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert expected.std() > 1.0  # a real function of the weights, not a constant

    enc_layer, dec_layer = layer_parameters(48, 96, 32, 64)
    vocab = len(toy_dictionary(VOCAB))
    analytic = vocab * 48 + vocab * 32 + depth_e * enc_layer + depth_d * dec_layer  # output projection tied
    assert sum(p.numel() for p in plain.parameters()) == analytic == summary.unrolled_parameters
    shared_q = 32 * 32 + 32 if query_sharing else 0
    assert sum(p.numel() for p in pet.parameters()) == summary.unique_parameters
    assert summary.unique_parameters == (vocab * 80 + len(set(plans[0].replace("~", "").split(","))) * enc_layer
                                         + len(set(plans[1].replace("~", "").split(","))) * (dec_layer - shared_q))


def test_swapped_depths_hold_the_other_projection_and_cross_attention_the_unswapped_query(tmp_path, data_dir):
    _, pet, state = student(tmp_path, data_dir)
    weights = unroll_state(state)[0]["model"]
    unique = pet.decoder.unique_layers[1]
    assert torch.equal(weights["decoder.layers.3.self_attn.q_proj.weight"], unique.self_attn.k_proj.weight)
    assert torch.equal(weights["decoder.layers.3.self_attn.k_proj.bias"], unique.self_attn.q_proj.bias)
    assert torch.equal(weights["decoder.layers.3.encoder_attn.q_proj.weight"], unique.self_attn.q_proj.weight)
    assert torch.equal(weights["decoder.layers.1.self_attn.q_proj.weight"], unique.self_attn.q_proj.weight)
    # every depth is its own copy: nothing is shared in the deployed file
    ptrs = [weights[f"encoder.layers.{d}.fc1.weight"].data_ptr() for d in range(4)]
    assert len(set(ptrs)) == 4


def _plain_data(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_data(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(_plain_data, value))
    return value is None or isinstance(value, (str, int, float, bool, torch.Tensor))


def test_checkpoint_is_standard_fairseq_without_training_state(tmp_path, data_dir):
    path, _, state = student(tmp_path, data_dir)
    state["cfg"]["task"]["_name"] = "pet_distillation"  # as a KD student records it
    state["cfg"]["task"]["teacher_path"] = "/runs/teacher/checkpoint_best.pt"
    state["cfg"]["criterion"] = {"_name": "pet_kd", "label_smoothing": 0.1, "kd_alpha": 0.5, "sentence_avg": False}
    torch.save(state, path)
    out = tmp_path / "standard.pt"
    summary = unroll_checkpoint(path, out)
    saved = torch.load(out, weights_only=True)

    assert set(saved) <= {"cfg", "model", "args", "optimizer_history", "extra_state"}
    assert saved["args"] is None and _plain_data(saved["cfg"])  # no Namespace: loads without any allow-list
    model, task = saved["cfg"]["model"], saved["cfg"]["task"]
    assert model["_name"] == model["arch"] == "transformer" and model["user_dir"] is None
    assert (model["encoder_layers"], model["decoder_layers"]) == (4, 4)
    assert not {"encoder_layer_plan", "decoder_layer_plan", "no_decoder_query_sharing"} & set(model)
    assert saved["cfg"]["common"]["user_dir"] is None
    assert task["_name"] == "translation" and "teacher_path" not in task
    assert (task["data"], task["source_lang"], task["target_lang"]) == (str(data_dir), "de", "en")
    assert saved["cfg"]["criterion"]["_name"] == "label_smoothed_cross_entropy"
    assert not any(k.startswith(("encoder.unique_layers", "decoder.unique_layers")) for k in saved["model"])
    assert summary.encoder_plan == "0,1,0~,1~" and summary.query_sharing
    assert summary.unrolled_parameters > summary.unique_parameters
    # the file holds the unrolled weights once each (no optimizer or criterion payload)
    payload = 4 * summary.unrolled_parameters
    assert payload < out.stat().st_size < payload + 100_000


def test_plain_transformer_passes_through_unchanged(tmp_path, data_dir, caplog):
    path, teacher, _ = student(tmp_path, data_dir, "--encoder-layers", "2", "--decoder-layers", "2",
                               name="teacher.pt", arch="transformer_iwslt_de_en")
    out = tmp_path / "teacher.standard.pt"
    with caplog.at_level("INFO", logger="pet_fairseq.export"):
        summary = unroll_checkpoint(path, out)
    assert summary.already_standard and "already a standard fairseq transformer" in caplog.text
    saved = torch.load(out, weights_only=True)
    assert saved["cfg"]["model"]["arch"] == "transformer_iwslt_de_en"
    reference = teacher.state_dict()
    assert saved["model"].keys() == reference.keys()
    assert all(torch.equal(saved["model"][k], reference[k]) for k in reference)


def _state(model_cfg: dict, task: str = "translation") -> dict:
    return {"model": {}, "cfg": {"model": model_cfg, "task": {"_name": task}, "common": {}}}


@pytest.mark.parametrize("model_cfg, message", [
    ({"_name": "transformer_lm", "arch": "transformer_lm"}, "is a 'transformer_lm' model, not a translation Transformer"),
    ({"_name": "lstm", "arch": "lstm"}, "is a 'lstm' model, not a translation Transformer"),
    ({"_name": "no_such_arch", "arch": "no_such_arch"}, "unknown architecture 'no_such_arch'"),
    ({"_name": "pet_iwslt_de_en", "arch": "pet_iwslt_de_en", "kronecker_ffn": "4,4"}, "Kronecker-factored"),
])
def test_unsupported_models_are_clear_errors(model_cfg, message):
    with pytest.raises(ExportError, match=message):
        unroll_state(_state(model_cfg))


def test_files_that_are_not_checkpoints_are_clear_errors_on_the_command_line(tmp_path, capsys):
    random_pt = tmp_path / "random.pt"
    torch.save({"weights": torch.randn(3)}, random_pt)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    for path, message in [(random_pt, "is not a fairseq checkpoint: expected 'model' and 'cfg'"),
                          (text, "is not a fairseq checkpoint (torch.load failed"),
                          (tmp_path / "missing.pt", "does not exist")]:
        assert export_main(["unroll", str(path), str(tmp_path / "out.pt")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()


def test_unroll_never_overwrites_the_student_and_needs_force_for_an_existing_output(tmp_path, data_dir, capsys):
    """unroll never writes over the student, replaces an existing OUT only with --force, and refuses a folder."""
    path, _, _ = student(tmp_path, data_dir)
    existing = tmp_path / "existing.pt"
    existing.write_bytes(b"an earlier export")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def refused(*argv: str) -> str:
        assert export_main(["unroll", *argv]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, errors
        return errors[0]

    assert refused(str(path), str(path), "--force") == (
        f"error: OUT {path} is the student checkpoint {path}: unrolling never overwrites its input; choose another "
        "output file")
    assert refused(str(path), str(existing)) == \
        f"error: {existing} exists; pass --force to overwrite it, or choose another output file"
    assert refused(str(path), str(tmp_path)) == \
        f"error: OUT {tmp_path} is a folder; pass a file name for the unrolled checkpoint (.pt)"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert export_main(["unroll", str(path), str(existing), "--force"]) == 0
    assert torch.load(existing, weights_only=True)["cfg"]["model"]["arch"] == "transformer"
    assert path.read_bytes() == before["student.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.pt", "student.pt"]  # no temporary file left


def test_unroll_logs_the_plain_fairseq_generate_command_with_every_sentence_kept(tmp_path, data_dir, caplog):
    """Plain fairseq-generate drops a last partial batch of an unrolled model without
    --required-batch-size-multiple 1, so the unroll log gives the whole command with it."""
    path, _, _ = student(tmp_path, data_dir)
    out = tmp_path / "unrolled.pt"
    with caplog.at_level("INFO", logger="pet_fairseq.export"):
        unroll_checkpoint(path, out, check=False)
    assert (f"fairseq-generate {data_dir} --path {out} --source-lang de --target-lang en "
            "--required-batch-size-multiple 1") in caplog.text


def test_a_wrong_unrolling_is_caught_by_the_built_in_check(tmp_path, data_dir, monkeypatch):
    import pet_fairseq.core.unroll as unroll

    path, _, _ = student(tmp_path, data_dir)
    monkeypatch.setattr(unroll, "_swapped", lambda name: name)  # forget the Q/K swap
    with pytest.raises(ExportError, match="the unrolled model differs from the student"):
        unroll_checkpoint(path, tmp_path / "out.pt")


def test_ctranslate2_batches_follow_fairseq_and_length_limits():
    assert make_batches([5, 1, 3, 2], batch_size=2, max_tokens=None) == [[1, 3], [2, 0]]
    assert make_batches([5, 1, 3, 2], batch_size=None, max_tokens=8) == [[1, 3], [2], [0]]
    assert max_decoding_length([3, 9], max_len_a=1.2, max_len_b=10) == int(1.2 * 10 + 10)
    assert max_decoding_length([3], max_len_a=0, max_len_b=5000) == 1023


def test_parallel_batches_split_each_batch_evenly_and_must_divide_the_threads():
    from types import SimpleNamespace

    from pet_fairseq.core.ctranslate2.decoding import load_translator, part_size

    assert [part_size(n, SimpleNamespace(num_translators=2)) for n in (64, 5, 1)] == [32, 3, 1]
    assert part_size(64, SimpleNamespace(num_translators=1)) == 0  # one worker: the batch is not split
    with pytest.raises(ValueError, match="3 parallel batches cannot share 2 threads evenly: choose a divisor"):
        load_translator("unused", threads=2, parallel_batches=3)


def test_ctranslate2_model_stores_unchanged_layer_copies_once(tmp_path, data_dir, capsys):
    pytest.importorskip("ctranslate2", reason="ctranslate2 is an optional extra: pip install -e .[ctranslate2]")
    from pet_fairseq.core.ctranslate2.convert import convert
    from pet_fairseq.core.ctranslate2.model_dir import (
        check_vocabularies,
        count_parameters,
        directory_bytes,
        export_info,
        is_model_dir,
    )

    path, _, state = student(tmp_path, data_dir)
    summary = unroll_state(state)[1]
    enc_layer, dec_layer = layer_parameters(48, 96, 32, 64)
    vocab = len(toy_dictionary(VOCAB))
    # the converter aliases equal variables: a `~` depth adds only its fused, Q/K-swapped QKV projection
    expected = vocab * (48 + 32) + 2 * enc_layer + 2 * dec_layer + 2 * 3 * (48 * 48 + 48) + 2 * 3 * (32 * 32 + 32)
    assert summary.unique_parameters < expected < summary.unrolled_parameters
    sizes = {}
    for quantization in ("float32", "int8"):
        out = convert(path, tmp_path / quantization, quantization=quantization)
        assert is_model_dir(out) and export_info(out)["quantization"] == quantization
        assert count_parameters(out) == expected
        sizes[quantization] = directory_bytes(out)
        check_vocabularies(out, data_dir, "de", "en")
    # int8 matrices save 3 bytes per weight (the float32 sinusoidal position tables stay)
    assert sizes["float32"] - sizes["int8"] > 2 * expected
    other = write_data_dir(tmp_path / "other", toy_dictionary(VOCAB + 8))
    with pytest.raises(InputError, match="source: the model's 208-entry vocabulary differs"):
        check_vocabularies(tmp_path / "int8", other, "de", "en")
    # the export command reports it as its own error
    assert export_main(["translate", str(tmp_path / "int8"), "--data-bin", str(other)]) == 2
    assert "error: vocabulary mismatch" in capsys.readouterr().err
    with pytest.raises(ExportError, match="exists and is not empty; pass --force"):
        convert(path, tmp_path / "int8")
    info = json.loads((tmp_path / "int8" / "pet_export.json").read_text())
    assert (info["source_lang"], info["target_lang"], info["decoder_plan"]) == ("de", "en", "0,1,0~,1~")
    assert not is_model_dir(tmp_path) and not is_model_dir(path)


def test_ctranslate2_refuses_another_data_bins_dictionaries_and_translate_reads_any_input(tmp_path, data_dir,
                                                                                            capsys):
    """Another data-bin's dictionaries and a missing --input are refused in one line; non-UTF-8 input is a warning."""
    pytest.importorskip("ctranslate2", reason="ctranslate2 is an optional extra: pip install -e .[ctranslate2]")
    from pet_fairseq.core.ctranslate2.convert import convert

    path, _, _ = student(tmp_path, data_dir)
    other = write_data_dir(tmp_path / "other", toy_dictionary(VOCAB + 8))
    with pytest.raises(ExportError) as refused:
        convert(path, tmp_path / "ct2", data_bin=other)
    message = str(refused.value)
    assert message.startswith(f"--data-bin {other} does not hold the dictionaries {path} was trained with: ")
    assert message.endswith("; pass --data-bin with the data-bin the model was trained on")
    assert not (tmp_path / "ct2").exists()
    assert export_main(["ctranslate2", str(path), str(tmp_path / "ct2"), "--data-bin", str(other)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: --data-bin ")

    model_dir = convert(path, tmp_path / "ct2")
    missing = tmp_path / "missing.de"
    assert export_main(["translate", str(model_dir), "--input", str(missing)]) == 2
    assert (f"error: --input {missing} is not a file; pass a text file, one tokenized and BPE'd sentence per line\n"
            in capsys.readouterr().err)
    bad = tmp_path / "bad.de"
    bad.write_bytes(b"w1 w2\nw3 \xff w4\nw5\n")
    before = bad.read_bytes()
    out = tmp_path / "hyps.txt"
    assert export_main(["translate", str(model_dir), "--input", str(bad), "--output", str(out), "--max-len-b", "3",
                        "--tokenizer", "none", "--threads", "1"]) == 0
    assert f"warning: {bad} line 2 is not valid UTF-8; undecodable bytes were replaced by U+FFFD" in \
        capsys.readouterr().err
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3 and bad.read_bytes() == before


def test_ctranslate2_limits_are_export_errors(tmp_path, data_dir):
    pytest.importorskip("ctranslate2", reason="ctranslate2 is an optional extra: pip install -e .[ctranslate2]")
    from pet_fairseq.core.ctranslate2.convert import convert

    path, _, _ = student(tmp_path, data_dir, "--decoder-attention-heads", "2")
    with pytest.raises(ExportError, match="(?s)CTranslate2 cannot convert .*attention-heads must have the same value"):
        convert(path, tmp_path / "ct2")
    with pytest.raises(ExportError, match="does not exist; pass --data-bin"):
        convert(path, tmp_path / "ct2", data_bin=tmp_path / "nowhere")


@pytest.mark.parametrize("arch", ["pet_iwslt_de_en", "pet_deep_shallow_iwslt_de_en",
                                  "pet_deep_shallow2_iwslt_de_en", "pet_deep12_shallow_iwslt_de_en"])
def test_ctranslate2_float32_gives_the_students_hypotheses(tmp_path, data_dir, arch):
    pytest.importorskip("ctranslate2", reason="ctranslate2 is an optional extra: pip install -e .[ctranslate2]")
    from pet_fairseq.core.ctranslate2.convert import convert
    from pet_fairseq.evaluation.translators import (
        CTranslate2Translator,
        FairseqTranslator,
        OutputLength,
    )

    path, model, _ = make_checkpoint(tmp_path / "student.pt", data_dir, arch, *DIMS, seed=3)
    peaky(model, scale=2.5)  # real choices, but not so sharp that 12 shared layers saturate into near-ties
    torch.save({**torch.load(path), "model": model.state_dict()}, path)
    d = toy_dictionary(VOCAB)
    fairseq_side = FairseqTranslator(arch, model, TranslationTask(TranslationConfig(), d, d))
    model_dir = str(convert(path, tmp_path / "ct2"))
    ct2_side = CTranslate2Translator(arch, model_dir, d, d, threads=1)
    in_two_parts = CTranslate2Translator(arch, model_dir, d, d, threads=2, parallel_batches=2)
    src, src_len = batch(vocab=VOCAB)
    sources = [row[-n:-1].tolist() for row, n in zip(src, src_len.tolist())]  # without padding and EOS
    for beam in (5, 1):
        for length in (OutputLength(max_len_b=12), OutputLength.forced(9)):
            expected = fairseq_side.translate(fairseq_side.prepare(sources), beam, length)
            assert ct2_side.translate(ct2_side.prepare(sources), beam, length) == expected
            assert in_two_parts.translate(in_two_parts.prepare(sources), beam, length) == expected
