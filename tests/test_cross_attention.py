"""The encoder-decoder attention cache is stored contiguously; values and searches are fairseq's."""

from __future__ import annotations

import pytest
import torch
from fairseq.modules import MultiheadAttention
from fairseq.sequence_generator import SequenceGenerator

from pet_fairseq.modules.cross_attention import ContiguousCacheAttention
from pet_fairseq.modules.linear_attention import LinearMultiheadAttention
from tests.conftest import build
from tests.test_pet_transformer import TINY, batch, peaky


def cross_attentions(model) -> list[MultiheadAttention]:
    return [layer.encoder_attn for layer in model.decoder.unique_layers]


def as_stock(model) -> None:
    for attention in cross_attentions(model):
        attention.__class__ = MultiheadAttention


def first_step_caches(model) -> list[dict]:
    """The cross-attention caches after one incremental decoding step of a batch."""
    src, src_len = batch()
    state: dict = {}
    encoder_out = model.encoder(src, src_len)
    prev = torch.full((src.size(0), 1), model.decoder.dictionary.eos())
    with torch.no_grad():
        model.decoder(prev, encoder_out=encoder_out, incremental_state=state)
    return [attention._get_input_buffer(state) for attention in cross_attentions(model)]


def test_the_students_cross_attention_stores_its_cache_contiguously_with_fairseqs_values():
    model = build("pet_iwslt_de_en", **TINY)
    assert all(type(a) is ContiguousCacheAttention for a in cross_attentions(model))
    ours = first_step_caches(model)
    as_stock(model)
    stock = first_step_caches(model)
    for mine, theirs in zip(ours, stock):
        for key in ("prev_key", "prev_value"):
            assert mine[key].is_contiguous() and not theirs[key].is_contiguous()  # fairseq keeps a strided view
            assert torch.equal(mine[key], theirs[key])


@pytest.mark.parametrize("arch", ["pet_iwslt_de_en", "pet_deep_shallow_iwslt_de_en"])
def test_beam_search_is_unchanged_by_the_layout(arch):
    model = peaky(build(arch, **TINY))
    src, src_len = batch()
    sample = {"net_input": {"src_tokens": src, "src_lengths": src_len}}

    def decode():
        with torch.no_grad():
            return SequenceGenerator([model], model.decoder.dictionary, beam_size=4, max_len_b=12).generate(
                [model], sample)

    ours = decode()
    as_stock(model)
    stock = decode()
    for a, b in zip(ours, stock):
        assert [h["tokens"].tolist() for h in a] == [h["tokens"].tolist() for h in b]
        assert torch.allclose(torch.stack([h["score"] for h in a]), torch.stack([h["score"] for h in b]), atol=1e-6)


def test_adopt_changes_only_plain_fairseq_attention():
    plain = MultiheadAttention(16, 2, kdim=8, vdim=8, encoder_decoder_attention=True)
    assert ContiguousCacheAttention.adopt(plain) is plain and type(plain) is ContiguousCacheAttention
    linear = LinearMultiheadAttention.from_softmax(MultiheadAttention(16, 2, self_attention=True), causal=True)
    assert type(ContiguousCacheAttention.adopt(linear)) is LinearMultiheadAttention
