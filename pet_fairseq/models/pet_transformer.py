"""PET student: a fairseq Transformer whose encoder and decoder run layer plans.

The encoder/decoder subclass fairseq's ``TransformerEncoderBase``/``TransformerDecoderBase``:
they build only the plan's unique layers with fairseq's own layer classes, then replace
``self.layers`` by one :class:`~pet_fairseq.modules.reused_layer.ReusedLayer` view per depth,
so fairseq's forward pass, incremental decoding and ``return_all_hiddens`` work unchanged.
"""


import copy
from dataclasses import dataclass, field
from typing import Dict, List

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerDecoderBase,
    TransformerEncoderBase,
    TransformerModel,
    base_architecture,
)
from fairseq.modules import LayerDropModuleList
from torch import Tensor, nn

from pet_fairseq.core.errors import ConfigError
from pet_fairseq.modules.cross_attention import ContiguousCacheAttention
from pet_fairseq.modules.kronecker import (
    KroneckerEmbedding,
    TiedKroneckerOutputProjection,
    factor_layer,
    parse_factor_shape,
)
from pet_fairseq.modules.linear_attention import LinearMultiheadAttention
from pet_fairseq.modules.reused_layer import ReusedLayer, share_query_projection
from pet_fairseq.sharing import LayerPlan

SELF_ATTENTION_KINDS = ("softmax", "linear")


@dataclass
class PETSharingConfig(FairseqDataclass):
    """Options of the student beyond fairseq's TransformerConfig: layer sharing, factoring, self-attention kind."""

    encoder_layer_plan: str = field(
        default="",
        metadata={
            "help": "unique encoder layer applied at each depth, e.g. '0,1,0~,1~' (PET), "
            "'0,0,0,0' (all shared), '0,1,2,3' (none); '~' swaps query and key projections "
            "on that pass. Default: no sharing over --encoder-layers"
        },
    )
    decoder_layer_plan: str = field(
        default="", metadata={"help": "like --encoder-layer-plan, for the decoder"}
    )
    no_decoder_query_sharing: bool = field(
        default=False,
        metadata={
            "help": "do not share the query projection between decoder self-attention and "
            "encoder-decoder attention (PET's parameter-pair sharing, on by default)"
        },
    )
    kronecker_ffn: str = field(
        default="",
        metadata={"help": "factor every FFN weight as A ⊗ B with A of shape ROWS,COLS (e.g. 4,4); '' = dense"},
    )
    kronecker_attention: str = field(
        default="", metadata={"help": "factor the attention q/k/v/out projections as A ⊗ B, A of shape ROWS,COLS"}
    )
    kronecker_embeddings: str = field(
        default="",
        metadata={"help": "factor the token embeddings (V x d) as A ⊗ B, A of shape ROWS,COLS; ROWS must divide "
                  "the dictionary size (fairseq pads it to a multiple of 8)"},
    )
    encoder_self_attention: ChoiceEnum(SELF_ATTENTION_KINDS) = field(
        default="softmax",
        metadata={"help": "encoder self-attention: softmax, or linear (kernelised, elu+1 feature map, "
                  "Katharopoulos et al. 2020; same parameters); cross-attention stays softmax"},
    )
    decoder_self_attention: ChoiceEnum(SELF_ATTENTION_KINDS) = field(
        default="softmax",
        metadata={"help": "decoder self-attention: softmax, or linear (causal; decoding keeps running sums, "
                  "O(1) per token in the output length)"},
    )


def _layer_plan(cfg, side: str) -> LayerPlan:
    """The plan of ``side`` ('encoder'/'decoder'); an empty option means no sharing."""
    text = getattr(cfg, f"{side}_layer_plan", "") or ""
    depth = getattr(cfg, side).layers
    return LayerPlan.parse(text, f"--{side}-layer-plan") if text else LayerPlan.unshared(depth)


def _with_layer_count(cfg, side: str, layers: int):
    cfg = copy.deepcopy(cfg)
    getattr(cfg, side).layers = layers
    return cfg


def _factor(layer: nn.Module, cfg) -> nn.Module:
    """Apply ``--kronecker-ffn`` / ``--kronecker-attention`` to a freshly built fairseq layer."""
    ffn = parse_factor_shape(getattr(cfg, "kronecker_ffn", ""), "--kronecker-ffn")
    attention = parse_factor_shape(getattr(cfg, "kronecker_attention", ""), "--kronecker-attention")
    factor_layer(layer, ffn, attention)
    return layer


def self_attention_kind(cfg, side: str) -> str:
    """``--{side}-self-attention`` of a model configuration ('softmax' when absent), checked."""
    value = getattr(cfg, f"{side}_self_attention", None) or "softmax"
    value = str(getattr(value, "value", value))  # a ChoiceEnum member or its string
    if value not in SELF_ATTENTION_KINDS:
        raise ConfigError(f"--{side}-self-attention {value!r}: choose one of {', '.join(SELF_ATTENTION_KINDS)}")
    return value


def _with_self_attention(layer: nn.Module, cfg, side: str) -> nn.Module:
    """Swap a freshly built layer's softmax self-attention for linear attention when the option says so.

    The linear module takes over the softmax module's projections, so parameter names, shapes and
    initial values are those of the softmax student.
    """
    if self_attention_kind(cfg, side) == "linear":
        layer.self_attn = LinearMultiheadAttention.from_softmax(layer.self_attn, causal=side == "decoder")
    return layer


def _views(unique: nn.ModuleList, plan: LayerPlan, layerdrop: float) -> nn.ModuleList:
    views = LayerDropModuleList(p=layerdrop) if layerdrop > 0.0 else nn.ModuleList()
    views.extend(ReusedLayer(unique[s.index], swap_qk=s.swap_qk) for s in plan.steps)
    return views


class PETTransformerEncoder(TransformerEncoderBase):
    """Transformer encoder that applies ``plan.num_unique`` layers at ``plan.depth`` depths."""

    def __init__(self, cfg, dictionary, embed_tokens, return_fc: bool = False) -> None:
        plan = _layer_plan(cfg, "encoder")
        super().__init__(_with_layer_count(cfg, "encoder", plan.num_unique), dictionary, embed_tokens, return_fc)
        self.cfg = cfg
        self.layer_plan = plan
        self.unique_layers = nn.ModuleList(list(self.layers))
        self.layers = _views(self.unique_layers, plan, self.encoder_layerdrop)
        self.num_layers = plan.depth

    def build_encoder_layer(self, cfg):
        return _factor(_with_self_attention(super().build_encoder_layer(cfg), cfg, "encoder"), cfg)

    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor) -> Dict[str, List[Tensor]]:
        """fairseq's reorder for beam search, skipping the copies that would change no value.

        Invariant: row ``r`` of every tensor in ``encoder_out`` equals row ``rows[r]`` of the
        encoder's forward output, ``rows = encoder_out[SOURCE_ROWS][0]`` (``arange(B)`` straight
        from ``forward``). After the reorder row ``r`` must equal forward row ``rows[new_order][r]``;
        where ``rows[new_order] == rows`` it already does, and the tensors are returned as they are.
        fairseq's ``SequenceGenerator`` reorders after every decoding step, where beams move only
        among copies of their own sentence, so only the expansion to beams and the removal of
        finished sentences copy. Same keys and values as ``TransformerEncoderBase.reorder_encoder_out``
        plus ``SOURCE_ROWS``; the input dictionary is not modified (nor may callers modify its
        tensors in place).
        """
        rows = encoder_out.get(SOURCE_ROWS) or [torch.arange(_batch_size(encoder_out), device=new_order.device)]
        new_rows = rows[0].index_select(0, new_order)
        if torch.equal(new_rows, rows[0]):  # False for a different size too
            return {**encoder_out, SOURCE_ROWS: [new_rows]}
        reordered = super().reorder_encoder_out({**encoder_out, "encoder_states": list(encoder_out["encoder_states"])},
                                                new_order)
        reordered[SOURCE_ROWS] = [new_rows]
        return reordered


SOURCE_ROWS = "source_rows"


def _batch_size(encoder_out: Dict[str, List[Tensor]]) -> int:
    """Rows of an encoder output (dim 1 of the T x B x C ``encoder_out``, else dim 0 of the B x T tensors)."""
    if encoder_out["encoder_out"]:
        return encoder_out["encoder_out"][0].size(1)
    for key in ("encoder_padding_mask", "encoder_embedding", "src_lengths"):
        if encoder_out.get(key):
            return encoder_out[key][0].size(0)
    raise ValueError("cannot reorder an encoder output without encoder_out, encoder_padding_mask, "
                     "encoder_embedding or src_lengths")


class PETTransformerDecoder(TransformerDecoderBase):
    """Transformer decoder with a layer plan and (optionally) a shared query projection."""

    def __init__(self, cfg, dictionary, embed_tokens, no_encoder_attn: bool = False, output_projection=None) -> None:
        plan = _layer_plan(cfg, "decoder")
        super().__init__(
            _with_layer_count(cfg, "decoder", plan.num_unique), dictionary, embed_tokens, no_encoder_attn, output_projection
        )
        self.cfg = cfg
        self.layer_plan = plan
        self.unique_layers = nn.ModuleList(list(self.layers))
        if not no_encoder_attn and not getattr(cfg, "no_decoder_query_sharing", False):
            for layer in self.unique_layers:
                share_query_projection(layer)
        self.layers = _views(self.unique_layers, plan, self.decoder_layerdrop)
        self.num_layers = plan.depth

    def build_decoder_layer(self, cfg, no_encoder_attn: bool = False):
        """fairseq's layer, with the options' self-attention and factoring; its encoder-decoder attention
        keeps its beam-search cache contiguous (:class:`ContiguousCacheAttention`)."""
        layer = _factor(_with_self_attention(super().build_decoder_layer(cfg, no_encoder_attn), cfg, "decoder"), cfg)
        if getattr(layer, "encoder_attn", None) is not None:
            ContiguousCacheAttention.adopt(layer.encoder_attn)
        return layer

    def build_output_projection(self, cfg, dictionary, embed_tokens) -> None:
        """A tied output projection of Kronecker embeddings reuses their factors (no new weights)."""
        if isinstance(embed_tokens, KroneckerEmbedding) and self.share_input_output_embed:
            self.output_projection = TiedKroneckerOutputProjection(embed_tokens)
        else:
            super().build_output_projection(cfg, dictionary, embed_tokens)


@register_model("pet_transformer")
class PETTransformerModel(TransformerModel):
    """Transformer with reused layers (PET, Pea-KD, ALBERT-style sharing) via layer plans."""

    @classmethod
    def add_args(cls, parser) -> None:
        super().add_args(parser)
        gen_parser_from_dataclass(parser, PETSharingConfig(), delete_default=True)

    @classmethod
    def build_model(cls, args, task):
        pet_base_architecture(args)
        for side in ("encoder", "decoder"):
            _check_depth(args, side)
            self_attention_kind(args, side)
        return super().build_model(args, task)

    @classmethod
    def build_embedding(cls, cfg, dictionary, embed_dim, path=None):
        shape = parse_factor_shape(getattr(cfg, "kronecker_embeddings", ""), "--kronecker-embeddings")
        if shape is None:
            return super().build_embedding(cfg, dictionary, embed_dim, path)
        if path:
            raise ConfigError("--kronecker-embeddings cannot load pretrained embeddings (--*-embed-path)")
        return KroneckerEmbedding(len(dictionary), embed_dim, dictionary.pad(), shape)

    @classmethod
    def build_encoder(cls, cfg, src_dict, embed_tokens):
        return PETTransformerEncoder(cfg, src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, cfg, tgt_dict, embed_tokens):
        return PETTransformerDecoder(cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention)


def _plan_depth(args, side: str):
    """The depth fixed by ``--{side}-layer-plan``, or None when no plan is given."""
    text = getattr(args, f"{side}_layer_plan", "")
    return LayerPlan.parse(text, f"--{side}-layer-plan").depth if text else None


def _check_depth(args, side: str) -> None:
    """A plan fixes the depth; a conflicting ``--{side}-layers`` is an error, not silently ignored."""
    depth, layers = _plan_depth(args, side), getattr(args, f"{side}_layers", None)
    if depth is not None and layers is not None and layers != depth:
        raise ConfigError(
            f"--{side}-layers {layers} disagrees with --{side}-layer-plan {getattr(args, f'{side}_layer_plan')!r} "
            f"(depth {depth}); drop --{side}-layers or change the plan"
        )


@register_model_architecture("pet_transformer", "pet_transformer")
def pet_base_architecture(args) -> None:
    """fairseq's base Transformer sizes; the depth follows the layer plan when one is given."""
    args.encoder_layer_plan = getattr(args, "encoder_layer_plan", "")
    args.decoder_layer_plan = getattr(args, "decoder_layer_plan", "")
    args.no_decoder_query_sharing = getattr(args, "no_decoder_query_sharing", False)
    for option in ("kronecker_ffn", "kronecker_attention", "kronecker_embeddings"):
        setattr(args, option, getattr(args, option, ""))
    args.encoder_self_attention = getattr(args, "encoder_self_attention", "softmax")
    args.decoder_self_attention = getattr(args, "decoder_self_attention", "softmax")
    for side in ("encoder", "decoder"):
        depth = _plan_depth(args, side)
        if getattr(args, f"{side}_layers", None) is None and depth is not None:
            setattr(args, f"{side}_layers", depth)
    base_architecture(args)


@register_model_architecture("pet_transformer", "pet_iwslt_de_en")
def pet_iwslt_de_en(args) -> None:
    """The PET paper's IWSLT'14 student (Jeon et al. 2023, Table 1).

    Encoder 320/640, 4 heads, 2 unique layers run as 4 (``0,1,0~,1~``); decoder 240/480, 4
    heads, same plan, query projection shared between self- and cross-attention; decoder input
    and output embeddings tied. With a 10k joined vocabulary this is ~18% of
    ``transformer_iwslt_de_en``'s parameters (the paper's -81% memory).
    """
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 320)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 640)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 4)
    args.encoder_layer_plan = getattr(args, "encoder_layer_plan", "0,1,0~,1~")
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 240)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", 480)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 4)
    args.decoder_layer_plan = getattr(args, "decoder_layer_plan", "0,1,0~,1~")
    args.share_decoder_input_output_embed = getattr(args, "share_decoder_input_output_embed", True)
    pet_base_architecture(args)


@register_model_architecture("pet_transformer", "pet_deep_shallow_iwslt_de_en")
def pet_deep_shallow_iwslt_de_en(args) -> None:
    """A student built for decode speed: a deep shared encoder and a one-layer decoder.

    ``pet_iwslt_de_en``'s widths, query sharing and tied decoder embeddings; encoder
    ``0,1,0~,1~,0,1`` (2 unique layers applied 6 times, Q/K swapped on the second pass), decoder
    ``0`` (one layer). Autoregressive decoding runs the decoder once per output token and beam, the
    encoder once per sentence, so depth moved from the decoder to the encoder costs little time
    (Kasai et al. 2021, "Deep Encoder, Shallow Decoder"; the WMT efficiency-task students). 7.87 M
    unique parameters with the 9,912-entry IWSLT'14 dictionary (``pet_iwslt_de_en``: 8.55 M).

    Chosen by measurement against 6+2 (:func:`pet_deep_shallow2_iwslt_de_en`) and 12+1
    (:func:`pet_deep12_shallow_iwslt_de_en`) plans: it is the fastest of them in fairseq and in
    CTranslate2 (docs/results/decode-speed-paper-sizes.md), and it pays for that in BLEU against the PET
    student (docs/results/deep-shallow-multi30k-300.md).
    """
    args.encoder_layer_plan = getattr(args, "encoder_layer_plan", "0,1,0~,1~,0,1")
    args.decoder_layer_plan = getattr(args, "decoder_layer_plan", "0")
    pet_iwslt_de_en(args)


@register_model_architecture("pet_transformer", "pet_deep12_shallow_iwslt_de_en")
def pet_deep12_shallow_iwslt_de_en(args) -> None:
    """Kasai et al.'s 12-layer-encoder / 1-layer-decoder shape with PET's sharing.

    As :func:`pet_deep_shallow_iwslt_de_en` with encoder ``0,1,2,0~,1~,2~,0,1,2,0~,1~,2~`` (3 unique
    layers applied 12 times; 8.69 M unique parameters with the 9,912-entry IWSLT'14 dictionary), the
    depth Kasai et al. found to match a 6+6 teacher with one decoder layer after full training. In
    this project's measurements it lost on both counts to the 6+1 student, slower and lower in BLEU
    after a short distillation, where a deeper shared stack has little time to train
    (docs/results/decode-speed-paper-sizes.md, docs/results/deep-shallow-multi30k-300.md). Kept for
    budgets long enough to test Kasai et al.'s claim.
    """
    args.encoder_layer_plan = getattr(args, "encoder_layer_plan", "0,1,2,0~,1~,2~,0,1,2,0~,1~,2~")
    pet_deep_shallow_iwslt_de_en(args)


@register_model_architecture("pet_transformer", "pet_deep_shallow2_iwslt_de_en")
def pet_deep_shallow2_iwslt_de_en(args) -> None:
    """:func:`pet_deep_shallow_iwslt_de_en` with its decoder layer applied twice (decoder ``0,0~``).

    The same unique parameters as the 6+1 student; the second application swaps the layer's Q/K
    projections as PET does, so the decoder gets two depths of computation for one layer's weights,
    at the decode time of a two-layer decoder. Between PET and 6+1 in both speed and BLEU
    (docs/results/decode-speed-paper-sizes.md, docs/results/deep-shallow-multi30k-300.md).
    """
    args.decoder_layer_plan = getattr(args, "decoder_layer_plan", "0,0~")
    pet_deep_shallow_iwslt_de_en(args)


@register_model_architecture("pet_transformer", "pet_wmt_en_de")
def pet_wmt_en_de(args) -> None:
    """A WMT'14 en-de student with PET's sharing, sized against ``transformer_wmt_en_de``.

    * width 320 / FFN 1280 / 8 heads on both sides, so the (large, 32-40k joined BPE)
      embeddings can be shared by encoder, decoder and output (``--share-all-embeddings``,
      as WMT teachers do): with 40k types this is ~31% of the teacher's parameters and the
      embedding, not the layers, is most of it;
    * encoder ``0,1,2,0~,1~,2~`` (3 unique layers run as 6): WMT has ~30x IWSLT's data and the
      encoder runs once per sentence, so its depth costs little decoding time;
    * decoder ``0,1,0~,1~`` (2 unique run as 4), as in PET: decoder depth sets decode speed.
    """
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 320)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 1280)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 8)
    args.encoder_layer_plan = getattr(args, "encoder_layer_plan", "0,1,2,0~,1~,2~")
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 320)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", 1280)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 8)
    args.decoder_layer_plan = getattr(args, "decoder_layer_plan", "0,1,0~,1~")
    args.share_all_embeddings = getattr(args, "share_all_embeddings", True)
    pet_base_architecture(args)


@register_model_architecture("pet_transformer", "pet_kronecker_iwslt_de_en")
def pet_kronecker_iwslt_de_en(args) -> None:
    """``pet_iwslt_de_en`` with Kronecker-factored weights (KroneckerBERT-style).

    FFN weights A ⊗ B with A 4x4 (16x fewer FFN weights), attention projections with A 2x2 (4x
    fewer), embeddings with A 2x2 (4x fewer; the tied output projection reuses them). With a 10k
    joined vocabulary: 1.92 M unique parameters, 4.5x fewer than ``pet_iwslt_de_en`` and 24x fewer
    than ``transformer_iwslt_de_en``. Initialise from a teacher with ``python -m
    pet_fairseq.kronecker_init`` and recover quality with ``pet_kd``.
    """
    args.kronecker_ffn = getattr(args, "kronecker_ffn", "4,4")
    args.kronecker_attention = getattr(args, "kronecker_attention", "2,2")
    args.kronecker_embeddings = getattr(args, "kronecker_embeddings", "2,2")
    pet_iwslt_de_en(args)


@register_model_architecture("pet_transformer", "pet_linear_iwslt_de_en")
def pet_linear_iwslt_de_en(args) -> None:
    """``pet_iwslt_de_en`` with linear self-attention in the encoder and the decoder.

    Same sizes, layer plans, query sharing and parameters as ``pet_iwslt_de_en``; the encoder and
    decoder self-attention use the elu+1 kernel of :mod:`pet_fairseq.modules.linear_attention`
    (``--encoder-self-attention linear --decoder-self-attention linear``), so a decoding step costs
    O(1) in the output length instead of O(length). Cross-attention stays softmax. Distil it from a
    softmax teacher with ``--task pet_distillation --criterion pet_kd``.
    """
    args.encoder_self_attention = getattr(args, "encoder_self_attention", "linear")
    args.decoder_self_attention = getattr(args, "decoder_self_attention", "linear")
    pet_iwslt_de_en(args)
