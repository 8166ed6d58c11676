"""Translators for the speed benchmarks: one interface, a fairseq and a CTranslate2 implementation.

A :class:`Translator` turns batches of source token ids (the model's source dictionary, no EOS)
into the token ids of the best hypothesis (target dictionary, no EOS), with a beam size and
:class:`OutputLength` limits. :meth:`Translator.prepare` does the per-batch work a serving loop
does once (collation, id -> token strings) outside the timed region; :meth:`Translator.translate`
is what gets timed. The fairseq implementation decodes like ``fairseq-generate`` (the task's
``SequenceGenerator``); the CTranslate2 one runs a converted model directory (``python -m
pet_fairseq.export ctranslate2``) in a torch-free worker process.

:func:`decode_pass` runs a translator over prepared batches and checks that every hypothesis has
the forced output length, so models and engines timed side by side did the same work.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch

from pet_fairseq.core.ctranslate2.decoding import check_parallel_batches
from pet_fairseq.evaluation.errors import EvaluationError

#: a batch of sentences as token ids of the source dictionary, without EOS
TokenBatch = Sequence[Sequence[int]]


@dataclass(frozen=True)
class OutputLength:
    """Output length limits in tokens before EOS: at least ``min_len``, at most ``max_len_a · L + max_len_b``.

    ``L`` is the longest source of a batch, EOS included (fairseq's convention). :meth:`forced`
    gives every hypothesis exactly the same length.
    """

    min_len: int = 1
    max_len_a: float = 0.0
    max_len_b: int = 200

    @classmethod
    def forced(cls, tokens_with_eos: int) -> "OutputLength":
        """Exactly ``tokens_with_eos - 1`` tokens, then EOS."""
        if tokens_with_eos < 2:
            raise ValueError(f"a forced output length must be >= 2 tokens (EOS included), got {tokens_with_eos}")
        return cls(min_len=tokens_with_eos - 1, max_len_a=0.0, max_len_b=tokens_with_eos - 1)

    @property
    def forced_tokens(self) -> int | None:
        """Tokens per hypothesis, EOS included, when the length is forced; else ``None``."""
        return self.max_len_b + 1 if self.max_len_a == 0 and self.min_len == self.max_len_b else None

    def max_tokens(self, longest_source: int) -> int:
        """The most tokens before EOS for a batch whose longest source (EOS included) has ``longest_source``."""
        return int(self.max_len_a * longest_source + self.max_len_b)


class Translator(Protocol):
    """What the benchmarks time: ``translate(prepare(batch), ...)`` for one engine and model."""

    label: str
    engine: str

    def prepare(self, batch: TokenBatch) -> Any:
        """The batch in the form :meth:`translate` takes (untimed)."""

    def translate(self, prepared: Any, beam: int, length: OutputLength) -> list[list[int]]:
        """Best hypothesis of every sentence: target token ids without EOS."""


class FairseqTranslator:
    """A fairseq model decoded with its task's ``SequenceGenerator``, as ``fairseq-generate`` does."""

    engine = "fairseq"

    def __init__(self, label: str, model: torch.nn.Module, task: Any, device: str = "cpu") -> None:
        self.label = label
        self.model = model.to(device).eval()
        self.task = task
        self.device = torch.device(device)
        self._generators: dict[tuple[int, OutputLength], Any] = {}

    def prepare(self, batch: TokenBatch) -> dict:
        """A collated sample: sources + EOS, left-padded like fairseq's translation datasets."""
        from fairseq.data import data_utils

        src_dict = self.task.source_dictionary
        sentences = [torch.tensor([*tokens, src_dict.eos()], dtype=torch.long) for tokens in batch]
        tokens = data_utils.collate_tokens(sentences, src_dict.pad(), src_dict.eos(), left_pad=True)
        lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        return {"id": torch.arange(len(sentences), device=self.device),
                "net_input": {"src_tokens": tokens.to(self.device), "src_lengths": lengths.to(self.device)}}

    def generator(self, beam: int, length: OutputLength) -> Any:
        """The task's generator for these settings (built once, then reused)."""
        key = (beam, length)
        if key not in self._generators:
            from fairseq.dataclass.configs import GenerationConfig
            from omegaconf import OmegaConf

            cfg = OmegaConf.structured(GenerationConfig(beam=beam, min_len=length.min_len, max_len_a=length.max_len_a,
                                                        max_len_b=length.max_len_b))
            self._generators[key] = self.task.build_generator([self.model], cfg)
        return self._generators[key]

    def translate(self, prepared: dict, beam: int, length: OutputLength) -> list[list[int]]:
        generator = self.generator(beam, length)
        eos = self.task.target_dictionary.eos()
        with torch.no_grad():
            hypos = self.task.inference_step(generator, [self.model], prepared)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        out = []
        for sentence in hypos:
            tokens = sentence[0]["tokens"].tolist()
            out.append(tokens[:-1] if tokens and tokens[-1] == eos else tokens)
        return out


class CTranslate2Translator:
    """A CTranslate2 model directory decoded (CPU) in its own torch-free process, with the model's vocabularies.

    The process is :func:`pet_fairseq.evaluation.ct2_worker.serve`: CTranslate2 and torch each bring
    their own OpenMP runtime, and in one process their idle threads compete for the cores and slow
    fairseq down (docs/results/decode-implementation.md). Each :meth:`translate` sends the batch as
    one JSON line and reads the hypotheses back, a small share of a batch's decoding time (same page).
    ``use_vmap``: restrict each batch's output vocabulary to the shortlist
    stored in the model (engine ``ctranslate2-shortlist``). ``parallel_batches``: decode each batch as that
    many parts side by side, on ``threads / parallel_batches`` threads each
    (:func:`pet_fairseq.core.ctranslate2.decoding.load_translator`). :meth:`close` ends the process.
    """

    def __init__(self, label: str, model_dir: str, source_dictionary: Any, target_dictionary: Any, threads: int,
                 use_vmap: bool = False, parallel_batches: int = 1) -> None:
        import importlib.util

        if importlib.util.find_spec("ctranslate2") is None:
            raise EvaluationError("the ctranslate2 package is not installed: pip install -e '.[ctranslate2]'")
        try:
            check_parallel_batches(parallel_batches, threads)
        except ValueError as exc:
            raise EvaluationError(f"{label}: {exc}") from exc
        self.label = label
        self.engine = "ctranslate2-shortlist" if use_vmap else "ctranslate2"
        self.use_vmap = use_vmap
        self.model_dir = str(model_dir)
        self.source_symbols = list(source_dictionary.symbols)
        self.target_index = target_dictionary.indices
        self.target_unk = target_dictionary.unk()
        worker = Path(__file__).resolve().parent / "ct2_worker.py"
        self._process = subprocess.Popen([sys.executable, "-P", str(worker), "--serve", self.model_dir, "--threads",
                                          str(threads), "--parallel-batches", str(parallel_batches)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if not self._process.stdout.readline():
            raise EvaluationError(f"{label}: the CTranslate2 worker could not load {self.model_dir} "
                                  f"(exit code {self._process.wait()}; its error is above)")

    def prepare(self, batch: TokenBatch) -> list[list[str]]:
        """Source token strings (CTranslate2 adds EOS itself)."""
        return [[self.source_symbols[i] for i in tokens] for tokens in batch]

    def translate(self, prepared: list[list[str]], beam: int, length: OutputLength) -> list[list[int]]:
        longest = max(len(tokens) for tokens in prepared) + 1  # + EOS, as fairseq counts the source
        request = {"source": prepared, "beam": beam, "min_len": length.min_len,
                   "max_len": length.max_tokens(longest), "use_vmap": self.use_vmap}
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        reply = json.loads(line) if line else {"error": f"the worker exited with code {self._process.wait()}"}
        if "error" in reply:
            raise EvaluationError(f"{self.label} (CTranslate2): {reply['error']}")
        return [[self.target_index.get(token, self.target_unk) for token in hypothesis]
                for hypothesis in reply["hypotheses"]]

    def close(self) -> None:
        """End the worker process (closing its input ends its loop)."""
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.wait()

    def __del__(self) -> None:
        if getattr(self, "_process", None) is not None:
            self.close()


def decode_pass(translator: Translator, prepared: Sequence[Any], beam: int, length: OutputLength) -> tuple[int, int]:
    """Translate every prepared batch once; returns (sentences, target tokens incl. EOS).

    With a forced :class:`OutputLength`, a hypothesis of any other length raises
    :class:`EvaluationError`: the figures would compare different amounts of work.
    """
    sentences = tokens = 0
    forced = length.forced_tokens
    for batch in prepared:
        hypotheses = translator.translate(batch, beam, length)
        lengths = [len(h) + 1 for h in hypotheses]
        if forced is not None and any(n != forced for n in lengths):
            raise EvaluationError(f"{translator.label} ({translator.engine}) generated {sorted(set(lengths))} "
                                  f"tokens per sentence instead of the forced {forced}")
        sentences += len(hypotheses)
        tokens += sum(lengths)
    return sentences, tokens
