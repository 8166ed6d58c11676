"""Linear self-attention: the kernel against a reference loop, incremental decoding, padding, the model option."""

from __future__ import annotations

import argparse
import io

import pytest
import torch
import torch.nn.functional as F

from pet_fairseq.modules.cross_attention import ContiguousCacheAttention
from pet_fairseq.modules.kronecker import KroneckerLinear
from pet_fairseq.modules.linear_attention import (
    LinearMultiheadAttention,
    causal_linear_attention,
    feature_map,
    linear_attention,
)
from tests.conftest import build, make_checkpoint, toy_dictionary, toy_task, unique_parameter_count, write_data_dir
from tests.test_pet_transformer import TINY, batch, beam_vs_full_forward, peaky

LINEAR = dict(encoder_self_attention="linear", decoder_self_attention="linear")
PLAN = dict(encoder_layer_plan="0,1,0~,1~", decoder_layer_plan="0,1,0~,1~")


def reference(q, k, v, causal: bool, pad=None, eps: float = 1e-6):
    """The naive O(n²) formula: out_i = Σ_j φ(q_i)·φ(k_j) v_j / (Σ_j φ(q_i)·φ(k_j) + eps) over visible j."""
    n, t, _ = q.shape
    out = torch.zeros(n, t, v.size(-1), dtype=q.dtype)
    for b in range(n):
        for i in range(t):
            num, den = torch.zeros(v.size(-1), dtype=q.dtype), torch.zeros((), dtype=q.dtype)
            for j in range(t):
                if (causal and j > i) or (pad is not None and pad[b, j]):
                    continue
                w = torch.dot(F.elu(q[b, i]) + 1, F.elu(k[b, j]) + 1)
                num, den = num + w * v[b, j], den + w
            out[b, i] = num / (den + eps)
    return out


def qkv(n=3, t=11, dk=4, dv=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, t, d, generator=g, dtype=torch.float64) for d in (dk, dk, dv)]


# ----------------------------------------------------------------------------------------------
# the kernel


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 11, 64])
def test_causal_kernel_equals_reference_loop(chunk_size):
    q, k, v = qkv()
    got, (s, z) = causal_linear_attention(feature_map(q), feature_map(k), v, chunk_size=chunk_size)
    torch.testing.assert_close(got, reference(q, k, v, causal=True), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, torch.einsum("ntd,nte->nde", feature_map(k), v))  # the final running sums
    torch.testing.assert_close(z, feature_map(k).sum(1))


def test_non_causal_kernel_with_padding_equals_reference_loop():
    q, k, v = qkv()
    pad = torch.zeros(3, 11, dtype=torch.bool)
    pad[0, :4] = pad[2, -2:] = True
    keep = (~pad).unsqueeze(-1)
    got = linear_attention(feature_map(q), feature_map(k) * keep, v * keep)
    torch.testing.assert_close(got, reference(q, k, v, causal=False, pad=pad), rtol=1e-10, atol=1e-10)


def test_causal_kernel_continues_from_a_state():
    """Splitting a sequence anywhere and carrying (S, z) over gives the one-pass result."""
    q, k, v = (feature_map(x) if i < 2 else x for i, x in enumerate(qkv(t=13)))
    whole, final = causal_linear_attention(q, k, v, chunk_size=4)
    first, state = causal_linear_attention(q[:, :6], k[:, :6], v[:, :6], chunk_size=4)
    second, again = causal_linear_attention(q[:, 6:], k[:, 6:], v[:, 6:], state, chunk_size=5)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    torch.testing.assert_close(again[0], final[0])
    torch.testing.assert_close(again[1], final[1])


# ----------------------------------------------------------------------------------------------
# the module


def attention(causal: bool, seed: int = 0, dim: int = 16, heads: int = 4) -> LinearMultiheadAttention:
    torch.manual_seed(seed)
    return LinearMultiheadAttention(dim, heads, causal=causal).double().eval()


def future_mask(t: int):
    return torch.triu(torch.full((t, t), float("-inf"), dtype=torch.float64), 1)


def test_module_equals_reference_with_its_projections():
    attn = attention(causal=True)
    x = torch.randn(7, 2, 16, dtype=torch.float64)
    out, weights = attn(x, x, x, attn_mask=future_mask(7), need_weights=True)
    assert weights is None
    heads = lambda y: y.view(7, 2 * 4, 4).transpose(0, 1)  # noqa: E731
    ref = reference(heads(attn.q_proj(x)), heads(attn.k_proj(x)), heads(attn.v_proj(x)), causal=True)
    torch.testing.assert_close(out, attn.out_proj(ref.transpose(0, 1).reshape(7, 2, 16)))


def test_incremental_steps_equal_parallel_form_across_a_beam_reorder():
    """Step-by-step decoding with running sums, reordered mid-sequence (repeats), equals the full pass."""
    attn = attention(causal=True)
    attn.chunk_size = 3  # the parallel form crosses chunk boundaries
    t, bsz, cut = 9, 4, 5
    x = torch.randn(t, bsz, 16, dtype=torch.float64)
    y = torch.randn(t, bsz, 16, dtype=torch.float64)  # the continuations after the reorder
    order = torch.tensor([2, 0, 0, 3])  # a permutation with repeats, as beam search produces
    state: dict = {}
    steps = [attn(x[i : i + 1], x[i : i + 1], x[i : i + 1], incremental_state=state)[0] for i in range(cut)]
    attn.reorder_incremental_state(state, order)
    steps = [s[:, order] for s in steps]
    steps += [attn(y[i : i + 1], y[i : i + 1], y[i : i + 1], incremental_state=state)[0] for i in range(cut, t)]
    seq = torch.cat([x[:cut, order], y[cut:]])
    full = attn(seq, seq, seq, attn_mask=future_mask(t))[0]
    torch.testing.assert_close(torch.cat(steps), full, rtol=1e-10, atol=1e-10)
    s = state[f"{attn._incremental_state_id}.attn_state"]["linear_s"]
    assert s.shape == (bsz, 4, 4, 4) and s.dtype == torch.float64  # (B, H, d_k, d_v), reordered on B


@pytest.mark.parametrize("causal", [False, True])
def test_padded_keys_contribute_nothing(causal):
    attn = attention(causal=causal)
    t, bsz = 8, 3
    x = torch.randn(t, bsz, 16, dtype=torch.float64)
    pad = torch.zeros(bsz, t, dtype=torch.bool)
    pad[0, :3] = pad[2, :1] = True  # left padding: the pads precede real positions even in causal attention
    mask = future_mask(t) if causal else None
    noisy = x.clone()
    noisy[pad.t()] = 100 * torch.randn(int(pad.sum()), 16, dtype=torch.float64)
    clean_out = attn(x, x, x, key_padding_mask=pad, attn_mask=mask)[0]
    noisy_out = attn(noisy, noisy, noisy, key_padding_mask=pad, attn_mask=mask)[0]
    keep = ~pad.t()
    torch.testing.assert_close(noisy_out[keep], clean_out[keep], rtol=1e-10, atol=1e-10)
    unmasked = attn(noisy, noisy, noisy, attn_mask=mask)[0]  # the check can fail: without the mask pads leak
    assert (unmasked[keep] - clean_out[keep]).abs().max() > 1e-3
    # a sentence alone gives the same outputs as inside the padded batch
    alone = x[:, 0][~pad[0]].unsqueeze(1)
    mask_alone = future_mask(alone.size(0)) if causal else None
    torch.testing.assert_close(attn(alone, alone, alone, attn_mask=mask_alone)[0][:, 0], clean_out[keep[:, 0], 0])


def test_module_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="cannot apply an attn_mask"):
        attention(causal=False)(*(torch.randn(3, 1, 16, dtype=torch.float64),) * 3, attn_mask=future_mask(3))
    x, mem = torch.randn(3, 1, 16, dtype=torch.float64), torch.randn(5, 1, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="self-attention only"):
        attention(causal=False)(x, mem, mem)


# ----------------------------------------------------------------------------------------------
# the model option


@pytest.mark.parametrize("options", [
    LINEAR,
    dict(decoder_self_attention="linear"),
    dict(**LINEAR, no_decoder_query_sharing=True),
    dict(**LINEAR, kronecker_attention="2,2", kronecker_ffn="4,4"),
], ids=["both", "decoder-only", "no-query-sharing", "kronecker"])
def test_beam_search_equals_full_forward(options):
    model = peaky(build("pet_iwslt_de_en", **PLAN, **TINY, **options))
    layer = model.decoder.unique_layers[0]
    assert isinstance(layer.self_attn, LinearMultiheadAttention) and layer.self_attn.causal
    assert type(layer.encoder_attn) is ContiguousCacheAttention  # cross-attention stays fairseq's softmax
    assert isinstance(model.encoder.unique_layers[0].self_attn, LinearMultiheadAttention) == ("encoder_self_attention" in options)
    if "kronecker_attention" in options:
        assert isinstance(layer.self_attn.q_proj, KroneckerLinear)
    if not options.get("no_decoder_query_sharing"):
        assert layer.encoder_attn.q_proj is layer.self_attn.q_proj
    with torch.no_grad():
        worst, hypos = beam_vs_full_forward(model)
    assert worst < 1e-4
    assert len({tuple(h["tokens"].tolist()) for h in hypos[0]}) == 5


def test_incremental_decoder_steps_equal_full_forward():
    model = build("pet_linear_iwslt_de_en", **TINY)
    assert [str(s) for s in model.decoder.layer_plan.steps] == ["0", "1", "0~", "1~"]
    src, src_len = batch()
    prev = torch.randint(4, 200, (src.size(0), 9), generator=torch.Generator().manual_seed(7))
    prev[:, 0] = 2  # decoding starts from EOS; targets have no pads while decoding
    with torch.no_grad():
        encoder_out = model.encoder(src, src_len)
        full = model.decoder(prev, encoder_out)[0]
        state: dict = {}
        steps = [model.decoder(prev[:, : i + 1], encoder_out, incremental_state=state)[0] for i in range(prev.size(1))]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    # every application of a shared layer keeps its own running sums
    assert sum(key.endswith("attn_state") and "linear_s" in value for key, value in state.items()) == 4


def test_encoder_padding_does_not_leak():
    """A sentence encodes the same alone and left-padded in a batch; pad inputs never reach real positions."""
    model = build("pet_linear_iwslt_de_en", **TINY)
    src, src_len = batch()
    i = int(src_len.argmin())
    with torch.no_grad():
        batched = model.encoder(src, src_len)["encoder_out"][0]
        alone = model.encoder(src[i : i + 1, -int(src_len[i]):], src_len[i : i + 1])["encoder_out"][0]
        torch.testing.assert_close(batched[-int(src_len[i]):, i], alone[:, 0], rtol=1e-5, atol=1e-5)
        # garbage at pad positions of a layer's input changes nothing at the real positions
        layer = model.encoder.unique_layers[0]
        pad = src.eq(1)
        x = torch.randn(src.size(1), src.size(0), 48)
        noisy = x.clone()
        noisy[pad.t()] = 50 * torch.randn(int(pad.sum()), 48)
        keep = ~pad.t()
        torch.testing.assert_close(layer(noisy, pad)[keep], layer(x, pad)[keep], rtol=1e-5, atol=1e-5)


def test_same_parameters_and_initial_weights_as_the_softmax_student():
    d = toy_dictionary(1000)
    linear = build("pet_linear_iwslt_de_en", task=toy_task(d), seed=5)
    softmax = build("pet_iwslt_de_en", task=toy_task(d), seed=5)
    a, b = linear.state_dict(), softmax.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same initial weights: a controlled comparison
    assert unique_parameter_count(linear) == unique_parameter_count(softmax)
    assert sum(p.numel() for p in linear.parameters()) == sum(p.numel() for p in softmax.parameters())


def test_a_softmax_checkpoint_loads_into_a_linear_student():
    softmax = build("pet_iwslt_de_en", **TINY, seed=1)
    linear = build("pet_linear_iwslt_de_en", **TINY, seed=2)
    linear.load_state_dict(softmax.state_dict(), strict=True)
    src, src_len = batch()
    prev = batch(seed=7)[0]
    with torch.no_grad():
        assert (linear(src, src_len, prev)[0] - softmax(src, src_len, prev)[0]).abs().max() > 1e-3


def test_bad_option_values_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"--encoder-self-attention 'cosine': choose one of softmax, linear"):
        build("pet_transformer", encoder_self_attention="cosine")
    data = write_data_dir(tmp_path / "data", toy_dictionary())
    with pytest.raises(SystemExit):
        make_checkpoint(tmp_path / "m.pt", data, "pet_transformer", "--decoder-self-attention", "cosine")
    err = capsys.readouterr().err
    assert "--decoder-self-attention: invalid choice: 'cosine'" in err and "'softmax', 'linear'" in err


@pytest.fixture(scope="module")
def linear_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("linear_ckpt")
    data = write_data_dir(tmp / "data", toy_dictionary())
    sizes = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
             "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
    path, model, _ = make_checkpoint(tmp / "linear.pt", data, "pet_linear_iwslt_de_en", *sizes,
                                     "--encoder-layer-plan", "0,1,0~,1~", "--decoder-layer-plan", "0,1,0~,1~")
    return path, model, data


def test_checkpoint_save_load_gives_identical_outputs(linear_checkpoint):
    from fairseq import checkpoint_utils

    path, model, data = linear_checkpoint
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides={"data": str(data)})
    loaded = models[0].eval()
    assert isinstance(loaded.decoder.unique_layers[1].self_attn, LinearMultiheadAttention)
    assert not loaded.encoder.unique_layers[1].self_attn.causal
    src, src_len = batch()
    prev = batch(seed=7)[0]
    with torch.no_grad():
        assert torch.equal(loaded(src, src_len, prev)[0], model(src, src_len, prev)[0])
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    clone = build("pet_linear_iwslt_de_en", **TINY, seed=9)
    with pytest.raises(RuntimeError):  # different widths: the state dict is checked, not silently partial
        clone.load_state_dict(torch.load(buf), strict=True)


def test_export_refuses_a_linear_attention_student(linear_checkpoint, tmp_path):
    from pet_fairseq.core.errors import ExportError
    from pet_fairseq.core.unroll import unroll_checkpoint

    path, _, _ = linear_checkpoint
    with pytest.raises(ExportError, match=r"linear self-attention \(--encoder-self-attention linear, "
                                          r"--decoder-self-attention linear\).*standard fairseq transformer"):
        unroll_checkpoint(path, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_export_drops_the_option_of_a_softmax_student(tmp_path):
    from pet_fairseq.core.unroll import unroll_state

    data = write_data_dir(tmp_path / "data", toy_dictionary())
    path, _, _ = make_checkpoint(tmp_path / "s.pt", data, "pet_transformer", "--encoder-layer-plan", "0,0",
                                 "--decoder-layer-plan", "0,0", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
                                 "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64")
    out, _ = unroll_state(torch.load(path, map_location="cpu", weights_only=False), path)
    assert not {"encoder_self_attention", "decoder_self_attention"} & set(out["cfg"]["model"])


def test_pruning_keeps_linear_attention(linear_checkpoint, tmp_path):
    from fairseq import checkpoint_utils

    from pet_fairseq.pruning import remove_depth, skipping
    from pet_fairseq.pruning.surgery import save_checkpoint

    path, model, data = linear_checkpoint
    state = torch.load(path, map_location="cpu", weights_only=False)
    pruned_path = save_checkpoint(remove_depth(state, "decoder", 2), tmp_path / "pruned.pt")
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(pruned_path)], arg_overrides={"data": str(data)})
    pruned = models[0].eval()
    assert str(pruned.decoder.layer_plan) == "0,1,1~"
    assert all(isinstance(layer.self_attn, LinearMultiheadAttention) for layer in pruned.decoder.unique_layers)
    src, src_len = batch()
    prev = batch(seed=7)[0]
    with torch.no_grad(), skipping(model, {"decoder": [2]}):
        torch.testing.assert_close(pruned(src, src_len, prev)[0], model(src, src_len, prev)[0], rtol=1e-5, atol=1e-5)


def test_training_step_gets_gradients_everywhere():
    model = build("pet_linear_iwslt_de_en", **TINY, attention_dropout=0.3).train()
    src, src_len = batch()
    prev = batch(seed=7)[0]
    model(src, src_len, prev)[0].logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_named_architecture_is_pet_iwslt_sizes_with_linear_attention():
    args = argparse.Namespace()
    from fairseq.models import ARCH_CONFIG_REGISTRY

    ARCH_CONFIG_REGISTRY["pet_linear_iwslt_de_en"](args)
    assert (args.encoder_self_attention, args.decoder_self_attention) == ("linear", "linear")
    assert (args.encoder_embed_dim, args.decoder_embed_dim, args.encoder_layer_plan) == (320, 240, "0,1,0~,1~")
    plain = argparse.Namespace()
    ARCH_CONFIG_REGISTRY["pet_iwslt_de_en"](plain)
    assert (plain.encoder_self_attention, plain.decoder_self_attention) == ("softmax", "softmax")


# ----------------------------------------------------------------------------------------------
# the length benchmark's pieces (the CLI itself runs in tests/e2e/test_linear_attention_cli.py)


def test_benchmark_inputs_concatenate_consecutive_sentences():
    from pet_fairseq.evaluation.length_benchmark import make_inputs

    sentences = [torch.arange(10 * i, 10 * i + n) for i, n in enumerate([3, 5, 2, 4])]
    inputs, next_start = make_inputs(sentences, length=7, count=3, eos=2)
    assert [x.tolist() for x in inputs] == [[0, 1, 2, 10, 11, 12, 2],  # 3 + 5 tokens cut to 6, + EOS
                                            [20, 21, 30, 31, 32, 33, 2],
                                            [0, 1, 2, 10, 11, 12, 2]]  # wrapped around
    assert next_start == 2
    assert [len(x) for x in make_inputs(sentences, 25, 2, eos=2, start=1)[0]] == [25, 25]


def test_benchmark_output_limits_and_bad_arguments(tmp_path, capsys):
    from pet_fairseq.evaluation import length_benchmark as lb
    from pet_fairseq.evaluation.translators import OutputLength

    parser = lb.build_parser()
    forced = parser.parse_args(["m.pt", "--data-bin", "d"])
    assert lb.output_limits(forced, 100) == OutputLength(min_len=99, max_len_a=0, max_len_b=99)  # 99 + EOS = 100
    half = parser.parse_args(["m.pt", "--data-bin", "d", "--output-length-ratio", "0.5"])
    assert lb.output_limits(half, 25) == OutputLength(min_len=11, max_len_a=0, max_len_b=11)
    free = parser.parse_args(["m.pt", "--data-bin", "d", "--free-length", "--max-len-a", "2", "--max-len-b", "3"])
    assert lb.output_limits(free, 25) == OutputLength(min_len=1, max_len_a=2.0, max_len_b=3)
    with pytest.raises(ValueError, match="--lengths '25,x'"):
        lb.parse_lengths("25,x")
    (tmp_path / "bin").mkdir()
    for argv, message in [
        ([str(tmp_path / "m.pt"), "--data-bin", str(tmp_path / "nope")], "is not a directory"),
        ([str(tmp_path / "m.pt"), "--data-bin", str(tmp_path / "bin")], "m.pt does not exist"),
        ([str(tmp_path / "m.pt"), "--data-bin", str(tmp_path / "bin"), "--lengths", "1"], "lengths >= 2"),
    ]:
        with pytest.raises(SystemExit):
            lb.main(argv)
        assert message in capsys.readouterr().err
