"""Where a fairseq model's decode time goes: encoder, decoder layers, output projection, beam search.

:func:`profile_decoding` wraps the ``forward`` of the encoder, the decoder, each decoder layer
(each :class:`~pet_fairseq.modules.reused_layer.ReusedLayer` application of a PET decoder counts as
a layer) and the output projection, and the model's ``get_normalized_probs`` (the log-softmax over
the vocabulary), with wall-clock timers, runs one decoding call, and restores the model. fairseq's
``SequenceGenerator`` calls ``encoder.forward``/``decoder.forward`` directly rather than through
``Module.__call__``, so forward hooks would miss them; wrapping the bound methods catches every call.

The categories add up to the measured total:

* ``encoder``: the whole encoder, once per batch;
* ``decoder_layers``: every decoder layer application at every step (self-attention with its cache,
  cross-attention, FFN);
* ``output_projection``: hidden state -> vocabulary logits, plus the log-softmax over the vocabulary;
* ``decoder_other``: the rest of the decoder's forward (embeddings, positions, layer norms);
* ``search``: everything else: beam search bookkeeping (top-k over beam × vocabulary, finished
  hypotheses, reordering the incremental-state caches), the EOS/min-length masking, Python overhead.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

CATEGORIES = ("encoder", "decoder_layers", "output_projection", "decoder_other", "search")


@contextmanager
def _timed_methods(targets: list[tuple[object, str, str]], totals: dict[str, float]) -> Iterator[None]:
    """Replace ``getattr(obj, name)`` by a wrapper adding its wall time to ``totals[key]``, then restore."""
    saved = []
    for obj, name, key in targets:
        original = getattr(obj, name)

        def wrapper(*args, __original=original, __key=key, **kwargs):
            start = time.perf_counter()
            try:
                return __original(*args, **kwargs)
            finally:
                totals[__key] += time.perf_counter() - start

        had_instance_attr = name in vars(obj)
        saved.append((obj, name, had_instance_attr, vars(obj).get(name)))
        object.__setattr__(obj, name, wrapper)
    try:
        yield
    finally:
        for obj, name, had_instance_attr, previous in reversed(saved):
            if had_instance_attr:
                object.__setattr__(obj, name, previous)
            else:
                delattr(obj, name)


def profile_decoding(model: torch.nn.Module, decode: Callable[[], object]) -> dict[str, float]:
    """Seconds spent in each of :data:`CATEGORIES` (and ``total``) while ``decode()`` runs ``model``.

    ``model`` is a fairseq encoder-decoder (``model.encoder``, ``model.decoder.layers``,
    ``model.decoder.output_projection``); ``decode`` must decode with it, e.g. a beam search.
    """
    decoder = model.decoder
    totals = dict.fromkeys(("encoder", "decoder", "decoder_layers", "projection", "normalize"), 0.0)
    targets: list[tuple[object, str, str]] = [(model.encoder, "forward", "encoder"), (decoder, "forward", "decoder"),
                                              (model, "get_normalized_probs", "normalize")]
    targets += [(layer, "forward", "decoder_layers") for layer in decoder.layers]
    if getattr(decoder, "output_projection", None) is not None:
        targets.append((decoder.output_projection, "forward", "projection"))
    with _timed_methods(targets, totals):
        start = time.perf_counter()
        decode()
        total = time.perf_counter() - start
    return {
        "encoder": totals["encoder"],
        "decoder_layers": totals["decoder_layers"],
        "output_projection": totals["projection"] + totals["normalize"],
        "decoder_other": totals["decoder"] - totals["decoder_layers"] - totals["projection"],
        "search": total - totals["encoder"] - totals["decoder"] - totals["normalize"],
        "total": total,
    }
