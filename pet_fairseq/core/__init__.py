"""What the tools and the training components share; it sits below every tool.

Tools (``seqkd``, ``study``, ``export``, ``pruning``, ``translate``, ``evaluation``, ``kdcache``)
import the core, never each other (tests/test_layering.py): code two tools need lives here.

* :mod:`~pet_fairseq.core.errors` -- the error classes every tool's errors derive from
* :mod:`~pet_fairseq.core.cli` -- the command convention (one ``error:`` line, exit status 2)
* :mod:`~pet_fairseq.core.arguments` -- shared option groups (language pair, decoding, threads)
* :mod:`~pet_fairseq.core.direction` -- a model's translation direction against the options
* :mod:`~pet_fairseq.core.files` -- file digests and atomic writes
* :mod:`~pet_fairseq.core.teacher_cache` -- the teacher cache format
* :mod:`~pet_fairseq.core.plateau` -- validation curves, plateaus, checkpoint averaging
* :mod:`~pet_fairseq.core.training_cost` -- seconds per update of a fairseq-train log
* :mod:`~pet_fairseq.core.checkpoint` -- the checkpoint readers, stripping for inference
* :mod:`~pet_fairseq.core.checks` -- a checkpoint against a data-bin: language pair, subset, dictionaries
* :mod:`~pet_fairseq.core.decode` -- decoding a checkpoint as fairseq-generate does
* :mod:`~pet_fairseq.core.postprocess` -- de-BPE and detokenization of decoder output
* :mod:`~pet_fairseq.core.bleu` -- detokenized sacreBLEU and IWSLT-style tokenized BLEU
* :mod:`~pet_fairseq.core.speed` -- the timing loop of every speed figure
* :mod:`~pet_fairseq.core.unroll` -- a PET student as a standard fairseq transformer checkpoint
* :mod:`~pet_fairseq.core.ctranslate2` -- the CTranslate2 runtime: conversion, model directories, decoding

Modules here import fairseq, torch and numpy but never a tool package. Importing this package
imports nothing.
"""
