"""The teacher's decoders for sequence-level KD: fairseq's beam search or a CTranslate2 conversion.

Both decode the same batches (sentences sorted by source length, as fairseq batches them) with
fairseq's length limit per batch, ``max_len = a · (longest source + EOS) + b``, and return the
best hypothesis of each sentence as token ids without EOS, with a flag saying whether it stopped
at that limit instead of at EOS. Greedy decoding is ``beam = 1``.

The CTranslate2 engine converts the teacher once (with :func:`pet_fairseq.core.ctranslate2.convert.convert`)
into the work folder; ``float32`` reproduces fairseq's hypotheses up to floating-point ties,
``int8`` trades a little fidelity for speed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Protocol, Sequence, Tuple

import torch
from fairseq.data import data_utils

from pet_fairseq.core.ctranslate2 import decoding
from pet_fairseq.seqkd.corpus import SeqKDError, Split

logger = logging.getLogger(__name__)

#: (hypothesis token ids without EOS, stopped at the length limit)
Hypothesis = Tuple[List[int], bool]


@dataclass(frozen=True)
class DecodeOptions:
    """How the teacher decodes: beam size, length penalty and fairseq's ``a · src_len + b`` limit."""

    beam: int = 5
    lenpen: float = 1.0
    max_len_a: float = 1.2
    max_len_b: int = 10

    def __post_init__(self) -> None:
        if self.beam < 1 or self.max_len_a < 0 or self.max_len_b < 1:
            raise SeqKDError(f"need --beam >= 1, --max-len-a >= 0, --max-len-b >= 1 (got {self.beam}, "
                             f"{self.max_len_a}, {self.max_len_b})")

    def limit(self, source_lengths: Sequence[int]) -> int:
        """Most tokens before EOS for a batch whose sources (without EOS) have these lengths."""
        return decoding.max_decoding_length(source_lengths, self.max_len_a, self.max_len_b)


class TeacherDecoder(Protocol):
    def decode(self, sources: List[List[int]]) -> List[Hypothesis]:
        """Best hypothesis of each source (token ids without EOS), decoded as one batch."""


class FairseqTeacher:
    """The teacher checkpoint under fairseq's ``SequenceGenerator``, checked as distillation checks it."""

    def __init__(self, teacher: Path, split: Split, options: DecodeOptions, device: str = "cpu") -> None:
        from fairseq.sequence_generator import SequenceGenerator

        from pet_fairseq.tasks.distillation import DistillationConfig, DistillationTask

        cfg = DistillationConfig(data=str(split.data_bin), source_lang=split.src, target_lang=split.tgt,
                                 teacher_path=str(teacher))
        task = DistillationTask(cfg, split.src_dict, split.tgt_dict)
        self.model = task.load_teacher(str(teacher)).to(device)
        self.options, self.split, self.device = options, split, torch.device(device)
        self.max_len = self.model.max_decoder_positions() - 1
        self.generator = SequenceGenerator([self.model], split.tgt_dict, beam_size=options.beam,
                                           max_len_a=options.max_len_a, max_len_b=options.max_len_b,
                                           len_penalty=options.lenpen)

    @torch.no_grad()
    def decode(self, sources: List[List[int]]) -> List[Hypothesis]:
        src_dict = self.split.src_dict
        tokens = [torch.tensor(s + [src_dict.eos()], dtype=torch.int64) for s in sources]
        batch = data_utils.collate_tokens(tokens, src_dict.pad(), src_dict.eos(), left_pad=True).to(self.device)
        lengths = torch.tensor([len(t) for t in tokens], device=self.device)
        sample = {"net_input": {"src_tokens": batch, "src_lengths": lengths}}
        limit = min(self.options.limit([len(s) for s in sources]), self.max_len)
        out = []
        for hypos in self.generator.generate([self.model], sample):
            ids = hypos[0]["tokens"].tolist()
            ids = ids[:-1] if ids and ids[-1] == self.split.tgt_dict.eos() else ids
            out.append((ids, len(ids) >= limit))
        return out


class CTranslate2Teacher:
    """The teacher converted to CTranslate2 (once, into ``model_dir``), decoded with the core's beam search.

    ``parallel_batches``: decode each batch as that many parts side by side, one thread-share each
    (:func:`pet_fairseq.core.ctranslate2.decoding.load_translator`); the hypotheses do not change.
    """

    def __init__(self, teacher: Path, split: Split, options: DecodeOptions, model_dir: Path,
                 compute_type: str = "float32", device: str = "cpu", threads: int = 0,
                 parallel_batches: int = 1) -> None:
        from pet_fairseq.core.ctranslate2.convert import convert

        if not (model_dir / "model.bin").is_file():
            logger.info("converting the teacher to CTranslate2 (%s) in %s", compute_type, model_dir)
            convert(teacher, model_dir, quantization=compute_type, data_bin=split.data_bin,
                    source_lang=split.src, target_lang=split.tgt, force=True)
        threads = threads or torch.get_num_threads()
        try:
            self.translator = decoding.load_translator(str(model_dir), threads, device,
                                                       parallel_batches=parallel_batches)
        except ValueError as exc:
            raise SeqKDError(f"--parallel-batches {parallel_batches} with {threads} threads: {exc}") from exc
        self.options, self.split = options, split

    def decode(self, sources: List[List[int]]) -> List[Hypothesis]:
        src_dict, tgt_dict = self.split.src_dict, self.split.tgt_dict
        limit = self.options.limit([len(s) for s in sources])
        results = decoding.search(self.translator, [[src_dict[i] for i in s] for s in sources], self.options.beam,
                                  limit, length_penalty=self.options.lenpen)
        out = []
        for result in results:
            ids = [tgt_dict.index(token) for token in result.hypotheses[0]]
            out.append((ids, len(ids) >= limit))
        return out


def load_teacher_decoder(engine: str, teacher: Path, split: Split, options: DecodeOptions, ct2_dir: Path,
                         compute_type: str, device: str, threads: int, parallel_batches: int = 1) -> TeacherDecoder:
    """The decoder of ``engine`` (``fairseq`` or ``ctranslate2``; the latter converted into ``ct2_dir``)."""
    if engine == "fairseq":
        if parallel_batches != 1:
            raise SeqKDError("--parallel-batches applies to --engine ctranslate2; fairseq uses --threads inside "
                             "each batch")
        return FairseqTeacher(teacher, split, options, device)
    if engine == "ctranslate2":
        return CTranslate2Teacher(teacher, split, options, ct2_dir, compute_type, device, threads, parallel_batches)
    raise SeqKDError(f"--engine must be fairseq or ctranslate2, not {engine!r}")
