"""Encoder-decoder attention whose beam-search cache is stored contiguously."""

from __future__ import annotations

from typing import Dict, Optional

from fairseq.modules import MultiheadAttention
from torch import Tensor


class ContiguousCacheAttention(MultiheadAttention):
    """fairseq's encoder-decoder attention, with the cached keys and values stored contiguously.

    At the first decoding step fairseq projects the T × B × C encoder output and caches
    ``K, V`` as ``(B, H, T, d)`` *views* of the time-major projection, so the elements of one
    row's keys lie ``B·H·d`` apart. Every later step reads the cache in two batched products,
    ``softmax(q Kᵀ / √d) V`` for ``B·H`` single-query rows, and CPU ``bmm`` over such strided
    operands is several times slower than over contiguous ones (it dominated the PET student's
    cross-attention time at 140-token sources). Here the cache is stored contiguous: one copy per
    batch at the first step (later steps store what they read, already contiguous, so ``.contiguous()``
    copies nothing). Parameters, outputs and cache values are fairseq's; only the memory layout differs.
    """

    def _set_input_buffer(self, incremental_state: Dict[str, Dict[str, Optional[Tensor]]],
                          buffer: Dict[str, Optional[Tensor]]):
        if self.encoder_decoder_attention:
            buffer = {key: None if value is None else value.contiguous() for key, value in buffer.items()}
        return super()._set_input_buffer(incremental_state, buffer)

    @classmethod
    def adopt(cls, attention: MultiheadAttention) -> MultiheadAttention:
        """Turn a freshly built fairseq ``MultiheadAttention`` into this class (same object and parameters).

        Subclasses of ``MultiheadAttention`` (other attention kinds) are returned unchanged.
        """
        if type(attention) is MultiheadAttention:
            attention.__class__ = cls
        return attention
