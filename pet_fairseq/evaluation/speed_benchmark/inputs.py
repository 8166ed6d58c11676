"""What the speed benchmark decodes: the dictionary, the source sentences, their batches, the shortlist's bitext.

By default everything comes from the IWSLT'14 BPE folder of ``../shared/data`` (``PET_SHARED_DATA``
overrides the data folder): the dictionary is counted from its valid and test files as
``fairseq-preprocess`` would count a joined one, the sources are the first lines of its ``test.de``
and the shortlist is counted on its valid set.

Invariant: every engine and model decodes the same token ids in the same batches: sentences are
encoded once with the one dictionary (no EOS; each engine adds its own), and :func:`make_batches`
orders them by length as fairseq orders a test set.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from pet_fairseq.evaluation.errors import EvaluationError
from pet_fairseq.evaluation.runner import PACKAGE_ROOT

SHARED_DATA = Path(os.environ.get("PET_SHARED_DATA", PACKAGE_ROOT.parent / "shared" / "data"))
DEFAULT_BPE_DIR = SHARED_DATA / "iwslt14-de-en" / "bpe10k"


def bpe_files(bpe_dir: Path) -> list[Path]:
    """The BPE'd ``{valid,test}.{de,en}`` files of ``bpe_dir`` that exist; an error naming the folder if none."""
    files = [bpe_dir / f"{split}.{lang}" for split in ("valid", "test") for lang in ("de", "en")]
    found = [path for path in files if path.is_file()]
    if not found:
        raise EvaluationError(f"no BPE'd valid/test files in {bpe_dir}: pass --dictionary DICT.txt and --source-text, "
                              "or --bpe-dir with the IWSLT'14 bpe10k folder of ../shared/data (see its README)")
    return found


def count_dictionary(paths: Sequence[Path]) -> Any:
    """A joined fairseq ``Dictionary`` of every token in ``paths``, padded to a multiple of 8 (fairseq-preprocess)."""
    from fairseq.data import Dictionary

    counts: Counter = Counter()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                counts.update(line.split())
    dictionary = Dictionary()
    for symbol, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        dictionary.add_symbol(symbol, n=count)
    dictionary.finalize(padding_factor=8)
    return dictionary


def load_dictionary(path: Path | None, bpe_dir: Path) -> Any:
    """``--dictionary`` if given, else :func:`count_dictionary` over :func:`bpe_files` of ``bpe_dir``."""
    from fairseq.data import Dictionary

    if path is not None:
        return Dictionary.load(str(path))
    return count_dictionary(bpe_files(bpe_dir))


def source_path(args: argparse.Namespace) -> Path:
    """``--source-text``, else ``BPE_DIR/test.de``; an error if it does not exist."""
    path = args.source_text or args.bpe_dir / "test.de"
    if not path.is_file():
        raise EvaluationError(f"source text {path} does not exist; pass --source-text (BPE'd, one per line)")
    return path


def read_sources(path: Path, dictionary: Any, count: int) -> list[list[int]]:
    """The first ``count`` non-empty lines of a BPE'd text file as token ids (no EOS)."""
    sources = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                sources.append(dictionary.encode_line(line, add_if_not_exist=False, append_eos=False).tolist())
                if len(sources) == count:
                    break
    if len(sources) < count:
        raise EvaluationError(f"{path} has {len(sources)} non-empty lines; {count} are needed (lower --sentences)")
    return sources


def make_batches(sources: Sequence[Sequence[int]], batch_size: int) -> list[list[Sequence[int]]]:
    """Sentences sorted by length (stable, as fairseq orders a test set), ``batch_size`` per batch."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    return [[sources[i] for i in order[start : start + batch_size]] for start in range(0, len(order), batch_size)]


def shortlist_prefix(args: argparse.Namespace) -> Path:
    """``--shortlist-bitext``, else the valid set of ``--bpe-dir``."""
    return args.shortlist_bitext or args.bpe_dir / "valid"


def shortlist_files(prefix: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """The source and target files of a bitext ``prefix`` (``PREFIX.de``, ``PREFIX.en``); an error if one is missing."""
    files = tuple(Path(f"{prefix}.{lang}") for lang in (args.source_lang, args.target_lang))
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise EvaluationError(f"--shortlist-bitext: {', '.join(missing)} not found; pass --shortlist-bitext PREFIX "
                              "(the BPE'd PREFIX.{source,target} lang) or leave ctranslate2-shortlist out of --engines")
    return files
