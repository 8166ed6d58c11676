"""Kernelised linear self-attention ("Transformers are RNNs", Katharopoulos et al. 2020).

Softmax attention weighs value ``v_j`` by ``exp(q_iᵀ k_j)``. Linear attention replaces the
exponential by a kernel ``φ(q_i)ᵀ φ(k_j)`` with the positive feature map ``φ(x) = elu(x) + 1``;
the sums over ``j`` then factor out of the query, so for causal (decoder) attention

    out_i = φ(q_i)ᵀ S_i / (φ(q_i)ᵀ z_i + eps),
    S_i   = Σ_{j≤i} φ(k_j) v_jᵀ   (d_k × d_v),
    z_i   = Σ_{j≤i} φ(k_j)        (d_k),

and for non-causal (encoder) attention the same with ``S``, ``z`` summed over every non-pad ``j``.
Training computes all positions at once (:func:`causal_linear_attention`: the running sums per
chunk of ``chunk_size`` positions via ``cumsum`` over chunks, plus masked quadratic attention
inside each chunk, so memory stays ``O(T/C · d_k · d_v + T · C)`` per head instead of
``O(T · d_k · d_v)``); incremental decoding keeps only ``S`` and ``z``, so each generated token
costs O(1) in the output length, where softmax attention re-reads every earlier key and value.

Differences from fairseq's softmax :class:`~fairseq.modules.MultiheadAttention` (whose
parameters, names and shapes this module keeps: ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``):

* the query is not scaled by ``d_k^-1/2`` (as in the paper: ``φ`` is not scale-invariant and
  the normaliser already bounds the output);
* attention dropout does not apply: no attention matrix is formed to drop entries from
  (``--attention-dropout`` is ignored; dropout elsewhere in the layer is unchanged);
* no attention weights are returned (``need_weights`` gives ``None``);
* self-attention only; causal-ness is fixed at construction, and an explicit ``attn_mask`` other
  than the decoder's future mask cannot be applied (non-causal modules reject one).
"""

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.modules import MultiheadAttention
from torch import Tensor

#: added to the normaliser φ(q)ᵀz, which is positive unless no key is visible (then the output is 0)
EPS = 1e-6
#: positions per chunk of the parallel causal form (quadratic inside a chunk, running sums across)
CHUNK_SIZE = 64

State = Tuple[Tensor, Tensor]


def feature_map(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1 > 0."""
    return F.elu(x) + 1.0


def linear_attention(q: Tensor, k: Tensor, v: Tensor, eps: float = EPS) -> Tensor:
    """Non-causal linear attention of feature-mapped ``q``, ``k`` (N, T, d_k) and ``v`` (N, T, d_v).

    Keys to ignore (padding) must have ``k`` (and ``v``) zero.
    """
    s = torch.einsum("ntd,nte->nde", k, v)
    z = k.sum(dim=1)
    num = torch.einsum("ntd,nde->nte", q, s)
    den = torch.einsum("ntd,nd->nt", q, z)
    return num / (den.unsqueeze(-1) + eps)


def causal_linear_attention(
    q: Tensor, k: Tensor, v: Tensor, state: Optional[State] = None, chunk_size: int = CHUNK_SIZE, eps: float = EPS
) -> Tuple[Tensor, State]:
    """Causal linear attention of feature-mapped ``q``, ``k`` (N, T, d_k) and ``v`` (N, T, d_v).

    ``state`` = (S, z) of the positions before these (shapes (N, d_k, d_v), (N, d_k)); returns the
    outputs (N, T, d_v) and the state after the last position. Vectorised over time: positions are
    grouped in chunks of ``chunk_size``; chunk ``c`` sees the running sums of chunks ``< c``
    (an exclusive ``cumsum`` of per-chunk ``φ(K)ᵀV``) plus its own keys under a causal mask.
    """
    n, t, dk = q.shape
    dv = v.size(-1)
    if state is None:
        state = (q.new_zeros(n, dk, dv), q.new_zeros(n, dk))
    s0, z0 = state
    if t == 1:  # one decoding step: S += φ(k) vᵀ, z += φ(k), no chunk machinery
        s = s0 + k[:, 0, :, None] * v[:, 0, None, :]
        z = z0 + k[:, 0]
        num = torch.einsum("nd,nde->ne", q[:, 0], s)
        den = (q[:, 0] * z).sum(-1, keepdim=True)
        return (num / (den + eps)).unsqueeze(1), (s, z)
    c = max(1, min(chunk_size, t))
    chunks = -(-t // c)
    extra = chunks * c - t
    if extra:  # zero keys/values add nothing; the padded queries' outputs are dropped
        q, k, v = (F.pad(x, (0, 0, 0, extra)) for x in (q, k, v))
    qc, kc, vc = q.view(n, chunks, c, dk), k.view(n, chunks, c, dk), v.view(n, chunks, c, dv)
    kv = torch.einsum("nbcd,nbce->nbde", kc, vc)  # (n, chunks, dk, dv)
    kz = kc.sum(dim=2)  # (n, chunks, dk)
    s_incl, z_incl = kv.cumsum(dim=1), kz.cumsum(dim=1)
    s_prev = s0.unsqueeze(1) + torch.cat([torch.zeros_like(kv[:, :1]), s_incl[:, :-1]], dim=1)
    z_prev = z0.unsqueeze(1) + torch.cat([torch.zeros_like(kz[:, :1]), z_incl[:, :-1]], dim=1)
    mask = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    within = torch.einsum("nbcd,nbed->nbce", qc, kc).masked_fill(~mask, 0.0)  # (n, chunks, c, c)
    num = torch.einsum("nbcd,nbde->nbce", qc, s_prev) + torch.einsum("nbce,nbef->nbcf", within, vc)
    den = torch.einsum("nbcd,nbd->nbc", qc, z_prev) + within.sum(dim=-1)
    out = (num / (den.unsqueeze(-1) + eps)).reshape(n, chunks * c, dv)[:, :t]
    return out, (s0 + s_incl[:, -1], z0 + z_incl[:, -1])


class LinearMultiheadAttention(MultiheadAttention):
    """Multi-head self-attention with the linear kernel of the module docstring.

    A subclass of fairseq's :class:`MultiheadAttention` with its projections (same names and
    shapes, so a softmax checkpoint loads and PET's Q/K swap, query sharing and Kronecker
    factoring apply unchanged) and its incremental-state mechanism: the running sums live in
    ``incremental_state`` under this module's ``_incremental_state_id`` (which
    :class:`~pet_fairseq.modules.reused_layer.ReusedLayer` sets per application) as
    ``linear_s`` (B, H, d_k, d_v) and ``linear_z`` (B, H, d_k), in at least float32.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        causal: bool = False,
        q_noise: float = 0.0,
        qn_block_size: int = 8,
        chunk_size: int = CHUNK_SIZE,
        eps: float = EPS,
    ) -> None:
        super().__init__(embed_dim, num_heads, dropout=dropout, bias=bias, self_attention=True,
                         q_noise=q_noise, qn_block_size=qn_block_size)
        self.causal = causal
        self.chunk_size = chunk_size
        self.eps = eps

    @classmethod
    def from_softmax(cls, attn: MultiheadAttention, causal: bool) -> "LinearMultiheadAttention":
        """Linear attention over the very projection modules of a softmax self-attention ``attn``.

        The weights are not copied or re-initialised, and no random numbers are drawn, so a model
        built with linear attention starts from the same weights as its softmax twin (same seed).
        """
        if not attn.self_attention or attn.bias_k is not None or attn.add_zero_attn:
            raise ValueError("linear attention replaces plain self-attention only (no cross-self-attention, "
                             "--add-bias-kv or --add-zero-attn)")
        if attn.use_xformers:
            raise ValueError("linear attention cannot be combined with an xformers attention config")
        with torch.random.fork_rng(devices=[]):
            new = cls(attn.embed_dim, attn.num_heads, dropout=attn.dropout_module.p,
                      bias=attn.q_proj.bias is not None, causal=causal)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(new, name, getattr(attn, name))
        new.skip_embed_dim_check = attn.skip_embed_dim_check
        return new

    def extra_repr(self) -> str:
        return f"causal={self.causal}, heads={self.num_heads}, chunk_size={self.chunk_size}"

    def _heads(self, x: Tensor, bsz: int) -> Tensor:
        """(T, B, H·d) -> (B·H, T, d)."""
        return x.contiguous().view(x.size(0), bsz * self.num_heads, -1).transpose(0, 1)

    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        before_softmax: bool = False,
        need_head_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Self-attention of ``query`` (T, B, C); returns (output (T, B, C), None).

        ``key_padding_mask`` (B, T), True at pads: those keys contribute nothing. With
        ``incremental_state`` the T positions continue the sequence whose sums are stored there.
        ``attn_mask`` is ignored by a causal module (causality is built in) and rejected by a
        non-causal one; ``need_weights`` returns ``None`` weights.
        """
        key = query if key is None else key
        value = key if value is None else value
        tgt_len, bsz, _ = query.shape
        if static_kv or before_softmax or key.shape[:2] != query.shape[:2] or value.shape[:2] != query.shape[:2]:
            raise ValueError("LinearMultiheadAttention is self-attention only: key and value must be the query's "
                             "sequence (no static_kv, no before_softmax)")
        if attn_mask is not None and not self.causal:
            raise ValueError("non-causal linear attention cannot apply an attn_mask (only key_padding_mask)")
        if key_padding_mask is not None and tuple(key_padding_mask.shape) != (bsz, tgt_len):
            raise ValueError(f"key_padding_mask of shape {tuple(key_padding_mask.shape)}: expected ({bsz}, {tgt_len})")

        acc = torch.promote_types(query.dtype, torch.float32)  # sums in at least float32 (fp16/bf16 training)
        q = feature_map(self._heads(self.q_proj(query), bsz).to(acc))
        k = feature_map(self._heads(self.k_proj(key), bsz).to(acc))
        v = self._heads(self.v_proj(value), bsz).to(acc)
        if key_padding_mask is not None:
            pads = key_padding_mask.to(torch.bool).repeat_interleave(self.num_heads, dim=0).unsqueeze(-1)
            k, v = k.masked_fill(pads, 0.0), v.masked_fill(pads, 0.0)

        if not self.causal:
            out = linear_attention(q, k, v, self.eps)
        else:
            state = self._get_state(incremental_state, bsz) if incremental_state is not None else None
            out, (s, z) = causal_linear_attention(q, k, v, state, self.chunk_size, self.eps)
            if incremental_state is not None:
                self._set_state(incremental_state, s, z, bsz)

        out = out.to(query.dtype).transpose(0, 1).contiguous().view(tgt_len, bsz, self.embed_dim)
        return self.out_proj(out), None

    def _get_state(self, incremental_state: Dict[str, Dict[str, Optional[Tensor]]], bsz: int) -> Optional[State]:
        buffer = self._get_input_buffer(incremental_state)
        s, z = buffer.get("linear_s"), buffer.get("linear_z")
        if s is None or z is None:
            return None
        return s.reshape(bsz * self.num_heads, *s.shape[2:]), z.reshape(bsz * self.num_heads, -1)

    def _set_state(self, incremental_state: Dict[str, Dict[str, Optional[Tensor]]], s: Tensor, z: Tensor,
                   bsz: int) -> None:
        buffer = self._get_input_buffer(incremental_state)
        buffer["linear_s"] = s.view(bsz, self.num_heads, *s.shape[1:])
        buffer["linear_z"] = z.view(bsz, self.num_heads, -1)
        self._set_input_buffer(incremental_state, buffer)

    def reorder_incremental_state(
        self, incremental_state: Dict[str, Dict[str, Optional[Tensor]]], new_order: Tensor
    ) -> Dict[str, Dict[str, Optional[Tensor]]]:
        """Beam search: select the running sums of the surviving hypotheses (batch dimension 0)."""
        buffer = self._get_input_buffer(incremental_state)
        if buffer:
            for name in ("linear_s", "linear_z"):
                if buffer.get(name) is not None:
                    buffer[name] = buffer[name].index_select(0, new_order)
            incremental_state = self._set_input_buffer(incremental_state, buffer)
        return incremental_state
