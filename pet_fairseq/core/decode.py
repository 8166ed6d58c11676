"""Decoding with a fairseq checkpoint as ``fairseq-generate`` decodes: the same model, batches and hypotheses.

:func:`load_model` is ``load_model_ensemble_and_task`` with ``data`` overridden and
``task.build_generator``; :func:`make_batches` is ``task.get_batch_iterator`` over a binarized
subset, in fairseq-generate's order and refusing to lose a sentence; :func:`translate_subset` runs
``task.inference_step`` and renders hypotheses and references as fairseq-generate's H and T lines
(de-BPE'd). The comparison tool's decoding process (:mod:`pet_fairseq.evaluation.decode`), the
pruning search and the translation tool decode with these.

A *job* (:func:`load_decoder`, :func:`make_batches`) is a dict with the keys ``checkpoint``,
``data_bin``, ``source_lang``, ``target_lang``, ``device``, ``beam``, ``max_len_a``, ``max_len_b``,
``subset``, ``batch_size`` and ``max_tokens``, as the comparison tool writes it
(:func:`pet_fairseq.evaluation.jobs.make_job`).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from fairseq import checkpoint_utils, utils
from fairseq.data import BaseWrapperDataset
from fairseq.dataclass.configs import GenerationConfig
from omegaconf import OmegaConf
from tqdm import tqdm

import pet_fairseq  # noqa: F401  (registers pet_transformer etc. and safe checkpoint loading)
from pet_fairseq.core.errors import InputError


@dataclass
class Decoder:
    """A loaded model with everything needed to decode batches like fairseq-generate."""

    task: Any
    model: torch.nn.Module
    generator: Any
    device: torch.device

    def translate(self, sample: dict) -> list:
        """Beam search on one collated batch; returns fairseq's per-sentence hypothesis lists."""
        return self.task.inference_step(self.generator, [self.model], sample)

    def hypothesis_text(self, hypo: dict) -> str:
        """One hypothesis as fairseq-generate prints its H line: target symbols (BPE kept), specials stripped."""
        return self.task.target_dictionary.string(hypo["tokens"].int().cpu(), None,
                                                  extra_symbols_to_ignore=_strip_symbols(self))


def load_model(checkpoint: str, data_bin: str, source_lang: str, target_lang: str, device: str, beam: int,
               max_len_a: float, max_len_b: int) -> Decoder:
    """Load a checkpoint with ``data_bin``'s dictionaries on ``device`` and build its beam-search generator."""
    overrides = {"data": str(data_bin), "source_lang": source_lang, "target_lang": target_lang}
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], arg_overrides=overrides)
    target = torch.device(device)
    model = models[0].to(target).eval()
    gen_cfg = OmegaConf.structured(GenerationConfig(beam=beam, max_len_a=max_len_a, max_len_b=max_len_b))
    model.prepare_for_inference_(OmegaConf.create({"generation": gen_cfg}))
    return Decoder(task=task, model=model, generator=task.build_generator([model], gen_cfg), device=target)


def load_decoder(job: dict) -> Decoder:
    """Load the checkpoint and subset, move the model to the device and build the generator."""
    decoder = load_model(job["checkpoint"], job["data_bin"], job["source_lang"], job["target_lang"], job["device"],
                         job["beam"], job["max_len_a"], job["max_len_b"])
    decoder.task.load_dataset(job["subset"], task_cfg=decoder.task.cfg)
    return decoder


class FirstSentences(BaseWrapperDataset):
    """A dataset view that yields only the sentences with id < ``limit`` (``--max-sentences``)."""

    def __init__(self, dataset: Any, limit: int):
        super().__init__(dataset)
        self.limit = limit

    def ordered_indices(self):
        indices = self.dataset.ordered_indices()
        return indices[indices < self.limit]


def make_batches(decoder: Decoder, job: dict, limit: int | None = None) -> list[dict]:
    """Collated batches of the subset (first ``limit`` sentences) in fairseq-generate's order, on the device."""
    task = decoder.task
    dataset = task.dataset(job["subset"])
    if limit is not None and limit < len(dataset):
        dataset = FirstSentences(dataset, limit)
    with warnings.catch_warnings():  # fairseq's loader asks for pinned memory; torch warns on a machine without a GPU
        warnings.filterwarnings("ignore", message="'pin_memory' argument is set as true but no accelerator is found")
        iterator = task.get_batch_iterator(
            dataset=dataset,
            max_tokens=job["max_tokens"],
            max_sentences=job["batch_size"],
            max_positions=utils.resolve_max_positions(task.max_positions(), decoder.model.max_positions()),
            required_batch_size_multiple=8,
            seed=1,
        ).next_epoch_itr(shuffle=False)
        batches = [sample for sample in iterator if "net_input" in sample]
    expected = len(dataset.ordered_indices()) if isinstance(dataset, FirstSentences) else len(dataset)
    decoded = sum(len(sample["id"]) for sample in batches)
    if decoded != expected:  # e.g. fairseq 0.12 dropping a last partial batch (see pet_fairseq.compat)
        raise InputError(f"batching kept {decoded} of {expected} sentences of {job['subset']}; "
                              "BLEU and speed would be measured on the wrong set")
    return [utils.move_to_cuda(s, decoder.device) if decoder.device.type == "cuda" else s for s in batches]


def _strip_symbols(decoder: Decoder) -> set:
    return getattr(decoder.generator, "symbols_to_strip_from_output", {decoder.generator.eos})


def runaway_ids(decoder: Decoder, sample: dict, hypos: list) -> list[int]:
    """Ids of the sentences of a batch whose top hypothesis ran away.

    Runaway: it stopped at the batch's length limit (fairseq's ``min(a · padded source length + b,
    max positions − 1)``) instead of at EOS, or it is longer than max(2 × its source, source + 10)
    tokens (a repetition loop that a long limit lets run).
    """
    generator = decoder.generator
    src_tokens = sample["net_input"]["src_tokens"]
    limit = min(int(generator.max_len_a * src_tokens.size(1) + generator.max_len_b), generator.max_len - 1)
    pad = decoder.task.source_dictionary.pad()
    found = []
    for i, sample_id in enumerate(sample["id"].tolist()):
        length = len(hypos[i][0]["tokens"]) - 1  # without EOS
        source = int(src_tokens[i].ne(pad).sum()) - 1
        if length >= limit or length > max(2 * source, source + 10):
            found.append(sample_id)
    return found


def translate_subset(decoder: Decoder, batches: list[dict], unbpe: Callable[[str], str],
                     runaway: list[int] | None = None) -> tuple[list[str], list[str]]:
    """Top hypotheses and references, de-BPE'd, in sentence-id order (like fairseq-generate's H/T lines).

    ``runaway``: a list that receives the ids of runaway hypotheses (:func:`runaway_ids`).
    """
    tgt_dict = decoder.task.target_dictionary
    strip = _strip_symbols(decoder)
    hyps: dict[int, str] = {}
    refs: dict[int, str] = {}
    for sample in tqdm(batches, desc="translate", unit="batch", file=sys.stderr, mininterval=2.0):
        hypos = decoder.translate(sample)
        if runaway is not None:
            runaway.extend(runaway_ids(decoder, sample, hypos))
        for i, sample_id in enumerate(sample["id"].tolist()):
            target = utils.strip_pad(sample["target"][i, :], tgt_dict.pad()).int().cpu()
            refs[sample_id] = unbpe(tgt_dict.string(target, None, escape_unk=True, extra_symbols_to_ignore=strip))
            hyps[sample_id] = unbpe(decoder.hypothesis_text(hypos[i][0]))
    order = sorted(hyps)
    return [hyps[i] for i in order], [refs[i] for i in order]
