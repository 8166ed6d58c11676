"""Scoring a model on a validation subset: token NLL (fast, default) or BLEU of beam-search output.

The model, task and batches are loaded once (:func:`load_validation`, with the core's
fairseq-generate-like loader, :mod:`pet_fairseq.core.decode`); candidates are then scored on the same cached batches by
running the loaded model with some depths skipped (:func:`pet_fairseq.pruning.surgery.skipping`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from pet_fairseq.pruning.errors import PruningError

METRICS = ("loss", "bleu")


@dataclass
class ScoreSettings:
    """How to score: the metric, the subset and how much of it, and beam-search settings for BLEU."""

    data_bin: str
    subset: str = "valid"
    metric: str = "loss"
    max_sentences: int | None = None  # score on the first N sentences (ids < N) only
    max_tokens: int = 4096
    batch_size: int | None = None
    beam: int = 4
    max_len_a: float = 0.0
    max_len_b: int = 200
    remove_bpe: str | None = None  # fairseq-generate's --remove-bpe / --post-process symbol, e.g. subword_nmt
    device: str = "cpu"
    source_lang: str | None = None
    target_lang: str | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "bleu"

    @property
    def label(self) -> str:
        return "BLEU (tok)" if self.metric == "bleu" else "valid NLL (bits/token)"


@dataclass
class Validation:
    """A loaded model and the cached batches of the subset it is scored on."""

    settings: ScoreSettings
    decoder: Any  # pet_fairseq.core.decode.Decoder
    batches: list[dict]

    @property
    def model(self) -> torch.nn.Module:
        return self.decoder.model

    @property
    def sentences(self) -> int:
        return sum(len(b["id"]) for b in self.batches)

    def score(self) -> float:
        """The metric of the model as it is now (with whatever depths are being skipped)."""
        if self.settings.metric == "loss":
            return token_nll(self.model, self.batches, self.decoder.task.target_dictionary.pad())
        return bleu(self.decoder, self.batches, self.settings.remove_bpe)


def _job(settings: ScoreSettings, checkpoint: str | Path) -> dict:
    return {
        "checkpoint": str(checkpoint), "data_bin": str(settings.data_bin), "subset": settings.subset,
        "source_lang": settings.source_lang, "target_lang": settings.target_lang, "device": settings.device,
        "beam": settings.beam, "max_len_a": settings.max_len_a, "max_len_b": settings.max_len_b,
        "max_tokens": settings.max_tokens, "batch_size": settings.batch_size,
    }


def load_validation(checkpoint: str | Path, settings: ScoreSettings) -> Validation:
    """Load ``checkpoint`` like fairseq-generate (data overridden) and batch the first sentences of the subset."""
    if settings.metric not in METRICS:
        raise PruningError(f"unknown metric {settings.metric!r}; choose one of {', '.join(METRICS)}")
    from pet_fairseq.core.decode import load_decoder, make_batches

    job = _job(settings, checkpoint)
    decoder = load_decoder(job)
    batches = make_batches(decoder, job, settings.max_sentences)
    if not batches:
        raise PruningError(f"subset '{settings.subset}' of {settings.data_bin} has no sentences to score")
    return Validation(settings, decoder, batches)


@torch.no_grad()
def token_nll(model: torch.nn.Module, batches: list[dict], pad: int) -> float:
    """Mean negative log-likelihood of the reference tokens, in bits (fairseq's ``nll_loss``), no label smoothing."""
    model.eval()
    total, tokens = 0.0, 0
    for sample in batches:
        net_output = model(**sample["net_input"])
        lprobs = model.get_normalized_probs(net_output, log_probs=True).float()
        target = sample["target"]
        mask = target.ne(pad)
        nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        total += nll[mask].sum().item()
        tokens += int(mask.sum().item())
    if tokens == 0:
        raise PruningError("the scoring batches hold no target tokens")
    return total / tokens / math.log(2)


def bleu(decoder: Any, batches: list[dict], remove_bpe: str | None) -> float:
    """Tokenized corpus BLEU (fairseq-generate ``--scoring bleu`` style) of beam-search output."""
    from fairseq.data.data_utils import post_process

    from pet_fairseq.core.bleu import tok_bleu
    from pet_fairseq.core.decode import translate_subset

    unbpe: Callable[[str], str] = (lambda s: post_process(s, remove_bpe)) if remove_bpe else (lambda s: s)
    hyps, refs = translate_subset(decoder, batches, unbpe)
    return tok_bleu(hyps, refs).score


def checkpoint_score(checkpoint: str | Path, settings: ScoreSettings) -> float:
    """Load ``checkpoint`` afresh and score it (used to check a written pruned checkpoint)."""
    return load_validation(checkpoint, settings).score()

