"""A reused layer is a view: one application of a shared Transformer layer at one depth."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Dict, Iterator, Optional

from torch import Tensor, nn


class ReusedLayer(nn.Module):
    """Applies a shared ``TransformerEncoderLayerBase``/``TransformerDecoderLayerBase`` at one depth.

    The view owns no parameters: it keeps a plain (unregistered) reference to the shared layer,
    which is registered once by its encoder/decoder, so ``parameters()``, ``state_dict()`` and
    checkpoints hold every shared tensor once. What the view does own:

    * its own incremental-state key for the self-attention, so beam-search caches of two
      applications of the same layer never collide (and are reordered independently);
    * ``swap_qk``: on this application the self-attention uses ``W_K`` as the query projection
      and ``W_Q`` as the key projection (see :mod:`pet_fairseq.sharing`).

    Encoder-decoder attention keeps the shared layer's own cache key: its keys and values
    depend only on the encoder output and the shared ``W_K``/``W_V``, so every application of
    a layer reads one cached copy instead of recomputing and storing it per depth.
    """

    def __init__(self, layer: nn.Module, swap_qk: bool = False) -> None:
        super().__init__()
        self.__dict__["shared"] = layer  # not a submodule: the weights are registered once elsewhere
        self.swap_qk = swap_qk
        self.self_attn_state_id = str(uuid.uuid4())

    def extra_repr(self) -> str:
        return f"shared={type(self.shared).__name__}@{id(self.shared):#x}, swap_qk={self.swap_qk}"

    @contextmanager
    def _as_this_application(self) -> Iterator[nn.Module]:
        attn = self.shared.self_attn
        saved_id = attn._incremental_state_id
        attn._incremental_state_id = self.self_attn_state_id
        if self.swap_qk:
            attn.q_proj, attn.k_proj = attn.k_proj, attn.q_proj
        try:
            yield self.shared
        finally:
            if self.swap_qk:
                attn.q_proj, attn.k_proj = attn.k_proj, attn.q_proj
            attn._incremental_state_id = saved_id

    def forward(self, *args, **kwargs):
        with self._as_this_application() as layer:
            return layer(*args, **kwargs)

    def reorder_incremental_state(
        self, incremental_state: Dict[str, Dict[str, Optional[Tensor]]], new_order: Tensor
    ) -> Dict[str, Dict[str, Optional[Tensor]]]:
        """Reorder this application's self-attention cache for beam search."""
        with self._as_this_application() as layer:
            return layer.self_attn.reorder_incremental_state(incremental_state, new_order)

    def upgrade_state_dict_named(self, state_dict: Dict[str, Tensor], name: str) -> None:
        """Nothing is stored under a view's name (fairseq's encoder calls this for every depth).

        The shared layer's tensors live under ``unique_layers.N``, where fairseq's recursive
        ``upgrade_state_dict_named`` already visits the shared layer itself.
        """


def share_query_projection(decoder_layer: nn.Module) -> None:
    """PET's parameter-pair sharing: W_Q of encoder-decoder attention := W_Q of self-attention.

    Both project the decoder state (``decoder_embed_dim`` -> ``decoder_embed_dim``), so one
    matrix serves both; the encoder-decoder attention keeps an unregistered reference, so the
    tensor is stored and counted once and gets gradient from both uses.
    """
    self_q, cross_attn = decoder_layer.self_attn.q_proj, decoder_layer.encoder_attn
    shape = lambda m: (m.in_features, m.out_features, type(m).__name__)  # noqa: E731
    if shape(self_q) != shape(cross_attn.q_proj):
        raise ValueError(
            f"cannot share the query projection: self-attention {shape(self_q)} vs "
            f"encoder-decoder attention {shape(cross_attn.q_proj)}"
        )
    del cross_attn._modules["q_proj"]
    cross_attn.__dict__["q_proj"] = self_q
