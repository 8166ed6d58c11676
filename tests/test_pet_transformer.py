"""PET model: layer plans, Q/K swap, query sharing, incremental decoding, parameter accounting."""

from __future__ import annotations

import io

import pytest
import torch
from fairseq.models.transformer import TransformerEncoderBase
from fairseq.sequence_generator import SequenceGenerator

from pet_fairseq.models.pet_transformer import SOURCE_ROWS
from pet_fairseq.modules.reused_layer import ReusedLayer
from tests.conftest import build, toy_dictionary, toy_task, unique_parameter_count

TINY = dict(  # small but with PET's shape: different encoder/decoder widths, 2 unique layers as 4
    encoder_embed_dim=48, encoder_ffn_embed_dim=96, encoder_attention_heads=4,
    decoder_embed_dim=32, decoder_ffn_embed_dim=64, decoder_attention_heads=4, dropout=0.0,
)


def batch(n: int = 6, vocab: int = 200, seed: int = 1, pad: int = 1, eos: int = 2):
    """Source sentences of different lengths (left-padded, as fairseq batches them)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 12, (n,), generator=g)
    tokens = torch.full((n, int(lengths.max())), pad)
    for i, length in enumerate(lengths.tolist()):
        tokens[i, -length:] = torch.cat([torch.randint(4, vocab, (length - 1,), generator=g), torch.tensor([eos])])
    return tokens, lengths


def peaky(model, scale: float = 3.0):
    """Sharpen a random model so beam search makes real choices (reorders) instead of ties."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(scale)
    return model


def full_forward_logprobs(model, src, src_len, targets):
    """log p(y_t | y_<t, x) of whole target sequences in one non-incremental forward pass."""
    eos = model.decoder.dictionary.eos()
    prev = torch.cat([torch.full((targets.size(0), 1), eos), targets[:, :-1]], dim=1)
    out = model(src, src_len, prev)
    lprobs = model.get_normalized_probs(out, log_probs=True)
    return lprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def beam_vs_full_forward(model, beam: int = 5):
    src, src_len = batch()
    gen = SequenceGenerator([model], model.decoder.dictionary, beam_size=beam, max_len_b=15)
    hypos = gen.generate([model], {"net_input": {"src_tokens": src, "src_lengths": src_len}})
    worst = 0.0
    for i, sent in enumerate(hypos):
        for hypo in sent:
            tokens = hypo["tokens"].unsqueeze(0)
            ref = full_forward_logprobs(model, src[i : i + 1], src_len[i : i + 1], tokens)[0]
            worst = max(worst, (ref - hypo["positional_scores"]).abs().max().item())
    return worst, hypos


@pytest.mark.parametrize("arch", ["pet_iwslt_de_en", "pet_wmt_en_de", "pet_deep_shallow_iwslt_de_en",
                                  "pet_deep_shallow2_iwslt_de_en", "pet_deep12_shallow_iwslt_de_en"])
def test_beam_search_equals_full_forward(arch):
    sizes = {**TINY, "decoder_embed_dim": 48, "decoder_ffn_embed_dim": 96} if arch == "pet_wmt_en_de" else TINY
    model = peaky(build(arch, **sizes))
    with torch.no_grad():
        worst, hypos = beam_vs_full_forward(model)
    assert worst < 1e-4
    assert len({tuple(h["tokens"].tolist()) for h in hypos[0]}) == 5  # real, distinct beam hypotheses


def test_each_application_needs_its_own_cache():
    """If two applications of a layer shared one self-attention cache, decoding would be wrong."""
    model = peaky(build("pet_iwslt_de_en", **TINY))
    for view in model.decoder.layers:
        view.self_attn_state_id = "collide-" + str(id(view.shared))
    with torch.no_grad():
        worst, _ = beam_vs_full_forward(model)
    assert worst > 1e-2


def test_greedy_search_equals_full_forward_argmax():
    model = peaky(build("pet_iwslt_de_en", **TINY))
    src, src_len = batch(n=3)
    gen = SequenceGenerator([model], model.decoder.dictionary, beam_size=1, max_len_b=10, min_len=3)
    with torch.no_grad():
        hypos = gen.generate([model], {"net_input": {"src_tokens": src, "src_lengths": src_len}})
        for i in range(3):
            tokens = hypos[i][0]["tokens"].unsqueeze(0)
            eos = model.decoder.dictionary.eos()
            prev = torch.cat([torch.full((1, 1), eos), tokens[:, :-1]], dim=1)
            lprobs = model.get_normalized_probs(model(src[i : i + 1], src_len[i : i + 1], prev), log_probs=True)
            lprobs[:, :, model.decoder.dictionary.pad()] = -float("inf")
            lprobs[:, : 3 - 1 + 1, eos] = -float("inf")  # min_len=3 forbids eos before step 3
            assert torch.equal(lprobs.argmax(-1)[0, :-1], tokens[0, :-1])


def stock_reorder(model, encoder_out, new_order):
    """fairseq's own ``TransformerEncoderBase.reorder_encoder_out`` on a copy of ``encoder_out``."""
    copied = {key: list(value) for key, value in encoder_out.items()}
    return TransformerEncoderBase.reorder_encoder_out(model.encoder, copied, new_order)


ENCODER_OUT_KEYS = ("encoder_out", "encoder_padding_mask", "encoder_embedding", "encoder_states", "src_lengths")


def test_reorder_encoder_out_equals_fairseq_and_skips_copies_that_change_nothing():
    model = build("pet_deep_shallow_iwslt_de_en", **TINY).eval()
    src, src_len = batch(n=4)
    with torch.no_grad():
        forward = model.encoder(src, src_len, return_all_hiddens=True)
    beam = 3
    orders = [  # (new_order, whether any row changes value)
        (torch.arange(4).repeat_interleave(beam), True),  # expansion to beams
        (torch.tensor([2, 0, 0, 5, 3, 3, 6, 8, 7, 9, 9, 11]), False),  # beams move within their sentence
        (torch.tensor([3, 4, 5, 0, 1, 2, 6, 7, 8, 9, 10, 11]), True),  # sentences 0 and 1 swap places
        (torch.tensor([0, 0, 2, 6, 7, 6, 9, 10, 11]), True),  # sentence 1 finished: the batch shrinks
        (torch.tensor([1, 1, 0, 5, 4, 3, 8, 6, 6]), False),
    ]
    ours, stock = forward, {key: list(value) for key, value in forward.items()}
    for order, changes in orders:
        previous = ours
        ours, stock = model.encoder.reorder_encoder_out(ours, order), stock_reorder(model, stock, order)
        kept = [a is b for key in ENCODER_OUT_KEYS for a, b in zip(previous[key], ours[key])]
        assert kept and all(kept) != changes
        for key in ENCODER_OUT_KEYS:
            assert len(ours[key]) == len(stock[key]) > 0
            for a, b in zip(ours[key], stock[key]):
                assert torch.equal(a, b), key
    assert ours[SOURCE_ROWS][0].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [state.size(1) for state in forward["encoder_states"]] == [4] * 7  # embeddings + 6 depths, untouched
    assert SOURCE_ROWS not in forward


def test_beam_search_with_fairseq_reorder_gives_identical_hypotheses(monkeypatch):
    model = peaky(build("pet_deep_shallow_iwslt_de_en", **TINY))
    with torch.no_grad():  # a likelier EOS, so sentences finish at different steps and the batch shrinks
        model.decoder.embed_tokens.weight[model.decoder.dictionary.eos()] *= 4
    src, src_len = batch()
    sample = {"net_input": {"src_tokens": src, "src_lengths": src_len}}

    def decode():
        gen = SequenceGenerator([model], model.decoder.dictionary, beam_size=4, max_len_b=12)
        with torch.no_grad():
            return gen.generate([model], sample)

    ours = decode()
    monkeypatch.setattr(type(model.encoder), "reorder_encoder_out", TransformerEncoderBase.reorder_encoder_out)
    stock = decode()
    assert len({len(sent[0]["tokens"]) for sent in stock}) > 1  # sentences finish at different steps
    for a, b in zip(ours, stock):
        assert [h["tokens"].tolist() for h in a] == [h["tokens"].tolist() for h in b]
        assert torch.equal(torch.stack([h["score"] for h in a]), torch.stack([h["score"] for h in b]))


def test_pet_plan_and_widths():
    model = build("pet_iwslt_de_en")
    enc, dec = model.encoder, model.decoder
    assert [str(v.swap_qk) for v in enc.layers] == ["False", "False", "True", "True"]
    assert [v.shared for v in enc.layers] == [enc.unique_layers[0], enc.unique_layers[1]] * 2
    assert len(enc.unique_layers) == len(dec.unique_layers) == 2
    assert enc.num_layers == dec.num_layers == 4
    assert enc.embed_tokens.embedding_dim == 320 and enc.unique_layers[0].fc1.out_features == 640
    assert dec.embed_tokens.embedding_dim == 240 and dec.unique_layers[0].fc1.out_features == 480
    cross = dec.unique_layers[0].encoder_attn
    assert (cross.k_proj.in_features, cross.k_proj.out_features) == (320, 240)  # encoder out -> decoder
    assert cross.q_proj is dec.unique_layers[0].self_attn.q_proj
    assert dec.output_projection.weight is dec.embed_tokens.weight


@pytest.mark.parametrize("arch, encoder_plan, decoder_plan", [
    ("pet_iwslt_de_en", "0,1,0~,1~", "0,1,0~,1~"),
    ("pet_deep_shallow_iwslt_de_en", "0,1,0~,1~,0,1", "0"),
    ("pet_deep_shallow2_iwslt_de_en", "0,1,0~,1~,0,1", "0,0~"),
    ("pet_deep12_shallow_iwslt_de_en", "0,1,2,0~,1~,2~,0,1,2,0~,1~,2~", "0"),
])
def test_named_plans_keep_pet_widths_query_sharing_and_tied_embeddings(arch, encoder_plan, decoder_plan):
    model = build(arch)
    enc, dec = model.encoder, model.decoder
    assert (str(enc.layer_plan), str(dec.layer_plan)) == (encoder_plan, decoder_plan)
    assert enc.num_layers == len(enc.layers) == len(encoder_plan.split(","))
    assert dec.num_layers == len(dec.layers) == len(decoder_plan.split(","))
    assert [v.swap_qk for v in enc.layers] == ["~" in step for step in encoder_plan.split(",")]
    assert (enc.embed_tokens.embedding_dim, dec.embed_tokens.embedding_dim) == (320, 240)
    assert all(layer.encoder_attn.q_proj is layer.self_attn.q_proj for layer in dec.unique_layers)
    assert dec.output_projection.weight is dec.embed_tokens.weight


def pet_analytic_parameters(vocab: int, e: int = 320, ef: int = 640, d: int = 240, df: int = 480,
                            encoder_unique: int = 2, decoder_unique: int = 2) -> int:
    linear = lambda i, o: i * o + o  # noqa: E731
    encoder_layer = 4 * linear(e, e) + linear(e, ef) + linear(ef, e) + 2 * 2 * e
    decoder_layer = (
        4 * linear(d, d)  # self-attention q, k, v, out
        + 2 * linear(e, d) + linear(d, d)  # cross-attention k, v (from the encoder width) and out; q is shared
        + linear(d, df) + linear(df, d) + 3 * 2 * d
    )
    return vocab * e + vocab * d + encoder_unique * encoder_layer + decoder_unique * decoder_layer  # output proj. tied


@pytest.mark.parametrize("arch, encoder_unique, decoder_unique",
                         [("pet_iwslt_de_en", 2, 2), ("pet_deep_shallow_iwslt_de_en", 2, 1),
                          ("pet_deep_shallow2_iwslt_de_en", 2, 1), ("pet_deep12_shallow_iwslt_de_en", 3, 1)])
def test_unique_parameters_equal_analytic_count(arch, encoder_unique, decoder_unique):
    d = toy_dictionary(1000)
    model = build(arch, task=toy_task(d))
    expected = pet_analytic_parameters(len(d), encoder_unique=encoder_unique, decoder_unique=decoder_unique)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert unique_parameter_count(model) == expected + 2  # + the encoder/decoder "version" buffers


def test_checkpoint_stores_shared_tensors_once():
    model = build("pet_iwslt_de_en", task=toy_task(toy_dictionary(1000)))
    keys = model.state_dict().keys()
    assert not any("encoder_attn.q_proj" in k for k in keys)
    assert not any(k.startswith(("encoder.layers.", "decoder.layers.")) for k in keys)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    payload = 4 * unique_parameter_count(model)
    assert payload < buf.tell() < payload + 40_000  # pickle overhead only, no second copy


def test_save_load_roundtrip_gives_identical_outputs():
    model = build("pet_iwslt_de_en", **TINY, seed=3)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    clone = build("pet_iwslt_de_en", **TINY, seed=4)
    clone.load_state_dict(torch.load(buf), strict=True)
    src, src_len = batch()
    prev = batch(seed=7)[0]
    with torch.no_grad():
        assert torch.equal(model(src, src_len, prev)[0], clone(src, src_len, prev)[0])


def unrolled_copy(pet, **sizes):
    """The same function as a plain stack (plan 0,1,2,3): layers 2,3 are copies of 0,1 with W_Q/W_K swapped."""
    plain = build("pet_iwslt_de_en", encoder_layer_plan="0,1,2,3", decoder_layer_plan="0,1,2,3",
                  no_decoder_query_sharing=True, **sizes)
    for side in ("encoder", "decoder"):
        for depth, view in enumerate(getattr(pet, side).layers):
            target = getattr(plain, side).unique_layers[depth]
            state = {k: v.clone() for k, v in view.shared.state_dict().items()}
            if side == "decoder":
                state["encoder_attn.q_proj.weight"] = view.shared.self_attn.q_proj.weight.clone()
                state["encoder_attn.q_proj.bias"] = view.shared.self_attn.q_proj.bias.clone()
            if view.swap_qk:
                for p in ("weight", "bias"):
                    q, k = f"self_attn.q_proj.{p}", f"self_attn.k_proj.{p}"
                    state[q], state[k] = state[k], state[q]
            target.load_state_dict(state, strict=True)
    rest = {k: v for k, v in pet.state_dict().items() if "unique_layers" not in k}
    plain.load_state_dict({**plain.state_dict(), **rest})
    return plain


def test_pet_equals_its_unrolled_plain_stack():
    pet = build("pet_iwslt_de_en", **TINY)
    plain = unrolled_copy(pet, **TINY)
    src, src_len = batch()
    prev = batch(seed=7)[0]
    with torch.no_grad():
        torch.testing.assert_close(pet(src, src_len, prev)[0], plain(src, src_len, prev)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["pet_iwslt_de_en", "pet_linear_iwslt_de_en"])
def test_qk_swap_is_active(arch):
    """The swap acts on every self-attention kind (linear attention keeps fairseq's q_proj/k_proj)."""
    pet = build(arch, **TINY)
    src, src_len = batch()
    prev = batch(seed=7)[0]
    with torch.no_grad():
        with_swap = pet(src, src_len, prev)[0]
        for view in [*pet.encoder.layers, *pet.decoder.layers]:
            view.swap_qk = False
        without = pet(src, src_len, prev)[0]
    assert (with_swap - without).abs().max() > 1e-3
    assert all(p.grad is None for p in pet.parameters())


def test_query_sharing_is_active_and_gets_gradient_from_both_uses():
    shared = build("pet_iwslt_de_en", **TINY).train()
    separate = build("pet_iwslt_de_en", no_decoder_query_sharing=True, **TINY).train()
    state = shared.state_dict()
    for i in range(2):
        for p in ("weight", "bias"):
            state[f"decoder.unique_layers.{i}.encoder_attn.q_proj.{p}"] = state[f"decoder.unique_layers.{i}.self_attn.q_proj.{p}"]
    separate.load_state_dict(state, strict=True)
    src, src_len = batch()
    prev = batch(seed=7)[0]
    shared(src, src_len, prev)[0].pow(2).mean().backward()
    separate(src, src_len, prev)[0].pow(2).mean().backward()
    layer_s, layer_p = shared.decoder.unique_layers[0], separate.decoder.unique_layers[0]
    both_uses = layer_p.self_attn.q_proj.weight.grad + layer_p.encoder_attn.q_proj.weight.grad
    torch.testing.assert_close(layer_s.self_attn.q_proj.weight.grad, both_uses, rtol=1e-4, atol=1e-7)
    assert layer_p.encoder_attn.q_proj.weight.grad.abs().sum() > 0
    # a different cross-attention query projection changes the function
    with torch.no_grad():
        layer_p.encoder_attn.q_proj.weight.add_(torch.randn_like(layer_p.encoder_attn.q_proj.weight))
        assert (shared.eval()(src, src_len, prev)[0] - separate.eval()(src, src_len, prev)[0]).abs().max() > 1e-3


def test_all_shared_and_unshared_plans_use_the_same_code():
    albert = build("pet_iwslt_de_en", encoder_layer_plan="0,0,0,0", decoder_layer_plan="0,0,0", **TINY)
    assert len(albert.encoder.unique_layers) == 1 and albert.encoder.num_layers == 4
    assert albert.decoder.num_layers == 3 and all(isinstance(v, ReusedLayer) for v in albert.decoder.layers)
    plain = build("pet_transformer", encoder_layers=2, decoder_layers=3, no_decoder_query_sharing=True)
    assert len(plain.decoder.unique_layers) == 3 and str(plain.decoder.layer_plan) == "0,1,2"


def test_plan_errors_reach_the_user():
    with pytest.raises(ValueError, match="--decoder-layer-plan '0,1,z': unknown step 'z'"):
        build("pet_iwslt_de_en", decoder_layer_plan="0,1,z")
    with pytest.raises(ValueError, match="--encoder-layers 6 disagrees with --encoder-layer-plan"):
        build("pet_iwslt_de_en", encoder_layers=6)
