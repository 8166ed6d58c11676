"""Layer pruning: checkpoint surgery equals skipping a layer, greedy search, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pet_fairseq.pruning import PruningError, check_targets, cli, remove_depth, search, skipping, stack_layout
from pet_fairseq.pruning.scoring import token_nll
from pet_fairseq.pruning.surgery import layer_map, prune_state, save_checkpoint
from tests.conftest import build, make_checkpoint, toy_dictionary, toy_task, write_data_dir

TINY = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
        "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_data_dir(tmp_path_factory.mktemp("prune_dicts"), toy_dictionary())


def toy_batch(seed: int = 0, bsz: int = 3, src_len: int = 7, tgt_len: int = 5) -> dict:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 200, (bsz, src_len), generator=g)
    src[0, :2] = 1  # left padding in one sentence, as fairseq collates sources
    tgt = torch.randint(4, 200, (bsz, tgt_len), generator=g)
    prev = torch.cat([torch.full((bsz, 1), 2), tgt[:, :-1]], dim=1)
    return {"src_tokens": src, "src_lengths": src.ne(1).sum(1), "prev_output_tokens": prev}


def skip_with_hooks(model, side: str, depth: int):
    """Make depth ``depth`` of ``side`` return its input unchanged (independent of the pruning code)."""
    layer = getattr(model, side).layers[depth]
    if side == "encoder":
        return layer.register_forward_hook(lambda module, args, out: args[0])
    return layer.register_forward_hook(lambda module, args, out: (args[0], None, None))


def load(path: Path, data_dir: Path):
    from fairseq import checkpoint_utils

    models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides={"data": str(data_dir)})
    return models[0].eval()


CASES = [
    ("transformer", ["--encoder-layers", "3", "--decoder-layers", "3"], "encoder", 0),
    ("transformer", ["--encoder-layers", "3", "--decoder-layers", "3"], "encoder", 2),
    ("transformer", ["--encoder-layers", "3", "--decoder-layers", "3"], "decoder", 1),
    ("pet_transformer", ["--encoder-layer-plan", "0,1,2,0~", "--decoder-layer-plan", "0,1,0~,1~"], "encoder", 1),
    ("pet_transformer", ["--encoder-layer-plan", "0,1,2,0~", "--decoder-layer-plan", "0,1,0~,1~"], "encoder", 3),
    ("pet_transformer", ["--encoder-layer-plan", "0,1,2,0~", "--decoder-layer-plan", "0,1,0~,1~"], "decoder", 0),
    ("pet_transformer", ["--encoder-layer-plan", "0,1,2,0~", "--decoder-layer-plan", "0,1,0~,1~"], "decoder", 3),
]


@pytest.mark.parametrize("arch,layers,side,depth", CASES)
def test_removed_depth_equals_skipping_it(arch, layers, side, depth, data_dir, tmp_path):
    path, original, _ = make_checkpoint(tmp_path / "model.pt", data_dir, arch, *TINY, *layers)
    state = torch.load(path, map_location="cpu", weights_only=False)
    pruned_path = save_checkpoint(remove_depth(state, side, depth), tmp_path / "pruned.pt")
    path.unlink()  # the pruned checkpoint loads without the original
    pruned = load(pruned_path, data_dir)

    batch = toy_batch()
    handle = skip_with_hooks(original, side, depth)
    with torch.no_grad():
        expected = original(**batch)[0]
        handle.remove()
        with skipping(original, {side: [depth]}):
            via_skipping = original(**batch)[0]
        got = pruned(**batch)[0]
        full = original(**batch)[0]
    assert getattr(pruned, side).num_layers == getattr(original, side).num_layers - 1
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(via_skipping, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(full, expected, atol=1e-4)  # the removed layer did something


def test_pet_plan_and_weights_are_renumbered(data_dir, tmp_path):
    path, _, _ = make_checkpoint(tmp_path / "pet.pt", data_dir, "pet_transformer", *TINY,
                                 "--encoder-layer-plan", "0,1,2,0~,1~", "--decoder-layer-plan", "0,1,0~,1~")
    state = torch.load(path, map_location="cpu", weights_only=False)
    # removing depth 2 drops unique layer 2 (used nowhere else); old 0,1 keep their numbers
    once = remove_depth(state, "encoder", 2)
    assert str(stack_layout(once, "encoder").plan) == "0,1,0~,1~"
    # removing depths 0 and 3 of the original leaves steps 1,2,1~: unique 1 -> 0, 2 -> 1
    twice = prune_state(state, {"encoder": {0, 3}})
    assert str(stack_layout(twice, "encoder").plan) == "0,1,0~"
    keys = {k.split(".")[2] for k in twice["model"] if k.startswith("encoder.unique_layers.")}
    assert keys == {"0", "1"}
    torch.testing.assert_close(twice["model"]["encoder.unique_layers.0.fc1.weight"],
                               state["model"]["encoder.unique_layers.1.fc1.weight"])
    torch.testing.assert_close(twice["model"]["encoder.unique_layers.1.fc1.weight"],
                               state["model"]["encoder.unique_layers.2.fc1.weight"])
    model_cfg = twice["cfg"]["model"]
    assert model_cfg.encoder_layers == 3 and model_cfg.encoder_layer_plan == "0,1,0~"
    assert state["cfg"]["model"].encoder_layer_plan == "0,1,2,0~,1~"  # the original config is not modified
    # decoder: query projection shared between self- and cross-attention stays shared
    dec = prune_state(state, {"decoder": {1}})
    assert str(stack_layout(dec, "decoder").plan) == "0,0~,1~"
    save_checkpoint(dec, tmp_path / "dec.pt")
    model = load(tmp_path / "dec.pt", data_dir)
    layer = model.decoder.unique_layers[0]
    assert layer.encoder_attn.q_proj is layer.self_attn.q_proj
    assert layer_map([0, 2, 3]) == "1:1,3:2,4:3"


def _train_copy_model(seed: int = 0):
    """A tiny pre-LN Transformer trained to copy, so that removing any trained layer hurts."""
    model = build("transformer", toy_task(), seed=seed, encoder_layers=3, decoder_layers=3, encoder_embed_dim=32,
                  decoder_embed_dim=32, encoder_ffn_embed_dim=64, decoder_ffn_embed_dim=64, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_normalize_before=True, decoder_normalize_before=True,
                  dropout=0.0, share_all_embeddings=True)
    g = torch.Generator().manual_seed(seed)

    def batch():
        src = torch.randint(4, 40, (16, 6), generator=g)
        prev = torch.cat([torch.full((16, 1), 2), src[:, :-1]], dim=1)
        return {"net_input": {"src_tokens": src, "src_lengths": torch.full((16,), 6), "prev_output_tokens": prev},
                "target": src}

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(120):
        sample = batch()
        lprobs = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True)
        loss = -lprobs.gather(-1, sample["target"].unsqueeze(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    batches = [batch() for _ in range(4)]
    # uniform guessing over the 36 copied types costs log2(36) = 5.2 bits: the model must have learnt
    assert token_nll(model, batches, pad=1) < 3.0, "the copy model did not learn; the test would prove nothing"
    return model, batches


@pytest.fixture(scope="module")
def copy_model():
    return _train_copy_model()


def _zero_residual_branches(layer) -> None:
    modules = [layer.self_attn.out_proj, layer.fc2] + ([layer.encoder_attn.out_proj] if hasattr(layer, "encoder_attn") else [])
    with torch.no_grad():
        for m in modules:
            m.weight.zero_()
            m.bias.zero_()


@pytest.mark.parametrize("side,depth", [("encoder", 1), ("decoder", 0), ("decoder", 2)])
def test_greedy_removes_an_identity_layer_first(copy_model, side, depth):
    import copy

    trained, batches = copy_model
    model = copy.deepcopy(trained)
    _zero_residual_branches(getattr(model, side).layers[depth])
    pad = 1

    def score(removed):
        with skipping(model, removed):
            return token_nll(model, batches, pad)

    baseline = score({})
    steps = search(score, {"encoder": 3, "decoder": 3}, {"encoder": 2, "decoder": 2}, strategy="greedy")
    first = steps[0]
    assert (first.removed_side, first.removed_depth) == (side, depth)
    assert len(first.candidates) == 6  # joint: every encoder and decoder depth competed
    assert first.score == pytest.approx(baseline, abs=1e-5)  # an identity layer changes nothing
    others = [c.score for c in first.candidates if (c.side, c.depth) != (side, depth)]
    assert min(others) > baseline + 0.05
    assert [s.encoder_layers + s.decoder_layers for s in steps] == [5, 4]
    assert (steps[-1].encoder_layers, steps[-1].decoder_layers) == (2, 2)


def test_top_strategy_and_side_order():
    calls = []

    def score(removed):
        calls.append({k: sorted(v) for k, v in removed.items()})
        return float(len(calls))

    steps = search(score, {"encoder": 4, "decoder": 3}, {"encoder": 2, "decoder": 2}, strategy="top")
    assert [(s.removed_side, s.removed_depth) for s in steps] == [("encoder", 3), ("encoder", 2), ("decoder", 2)]
    assert len(calls) == 3  # the baseline scores only what it removes
    steps = search(score, {"encoder": 3, "decoder": 3}, {"encoder": 2, "decoder": 1}, order="encoder-first")
    assert [s.removed_side for s in steps] == ["encoder", "decoder", "decoder"]
    assert len(steps[0].candidates) == 3 and len(steps[1].candidates) == 3 and len(steps[2].candidates) == 2
    # greedy with a higher-is-better metric keeps the candidate with the highest score
    steps = search(lambda removed: 10.0 - len(removed["decoder"]) * (1 + min(removed["decoder"], default=0)),
                   {"encoder": 2, "decoder": 3}, {"encoder": 2, "decoder": 2}, higher_is_better=True)
    assert (steps[0].removed_side, steps[0].removed_depth) == ("decoder", 0)


@pytest.mark.parametrize("targets,message", [
    ({"encoder": 5}, "more layers than the model has"),
    ({"decoder": 0}, "at least 1 layer"),
    ({"encoder": 3, "decoder": 3}, "nothing to prune"),
    ({}, "--target-encoder-layers N and/or --target-decoder-layers M"),
])
def test_bad_targets_are_clear_errors(targets, message):
    with pytest.raises(PruningError, match=message):
        check_targets({"encoder": 3, "decoder": 3}, targets)


def test_cli_input_errors(data_dir, tmp_path, capsys):
    path, _, _ = make_checkpoint(tmp_path / "m.pt", data_dir, "transformer", *TINY, "--encoder-layers", "3",
                                 "--decoder-layers", "2")
    base = [str(data_dir), "--out-dir", str(tmp_path / "out")]
    not_ckpt = tmp_path / "notes.txt"
    not_ckpt.write_text("hello\n")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    cases = [
        (["--path", str(path), "--target-encoder-layers", "4"], "its encoder has 3; pass a number from 1 to 3"),
        (["--path", str(path), "--target-decoder-layers", "0"], "needs at least 1 layer"),
        (["--path", str(tmp_path / "missing.pt"), "--target-encoder-layers", "1"], "does not exist"),
        (["--path", str(not_ckpt), "--target-encoder-layers", "1"], "is not a fairseq checkpoint"),
        (["--path", str(tmp_path / "plain.pt"), "--target-encoder-layers", "1"], "is not a fairseq checkpoint"),
        (["--path", str(path), "--target-encoder-layers", "1", "--subset", "valid"], "subset 'valid'"),
        (["--path", str(path), "--target-encoder-layers", "1", "--source-lang", "en", "--target-lang", "de"],
         "translates de->en, but --source-lang en --target-lang de asks for en->de"),
    ]
    for extra, message in cases:
        assert cli.main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert "error:" in err and message in err, (extra, err)
    assert cli.main([str(tmp_path / "nodata"), "--out-dir", str(tmp_path / "o"), "--path", str(path),
                     "--target-encoder-layers", "1"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "out" / "pruning_log.json").exists()


def test_an_out_dir_that_is_a_file_and_a_zero_beam_are_one_line(data_dir, tmp_path, capsys):
    """An --out-dir that is or lies under a file, and --beam 0, are one error line each."""
    path, _, _ = make_checkpoint(tmp_path / "m.pt", data_dir, "transformer", *TINY, "--encoder-layers", "3",
                                 "--decoder-layers", "2")
    afile = tmp_path / "five.de"
    afile.write_text("ein hund\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    base = [str(data_dir), "--path", str(path), "--target-encoder-layers", "2"]
    cases = [
        (["--out-dir", str(afile)], f"error: --out-dir {afile} is a file; pass a folder (it is created if missing)"),
        (["--out-dir", str(afile / "a")],
         f"error: --out-dir {afile / 'a'} lies under {afile}, which is a file; pass a folder (it is created if missing)"),
        (["--out-dir", str(tmp_path / "o"), "--metric", "bleu", "--beam", "0"], "error: --beam must be at least 1, got 0"),
    ]
    for extra, message in cases:
        assert cli.main(base + extra) == 2, extra
        assert capsys.readouterr().err.splitlines()[-1] == message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
