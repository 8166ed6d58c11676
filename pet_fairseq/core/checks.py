"""Up-front checks that turn bad inputs into clear messages (data-bin, subset, dictionaries).

A loaded checkpoint (:mod:`pet_fairseq.core.checkpoint`) against the data-bin a tool is given: its
language pair, whether the subset is binarized, whether its dictionaries are the data-bin's. Each
problem is an :class:`~pet_fairseq.core.errors.InputError` that names the files and the fix.
Importing this module imports neither torch nor fairseq.
"""

from __future__ import annotations

import logging
from argparse import Namespace
from pathlib import Path
from typing import Any, Sequence

from pet_fairseq.core.errors import InputError

logger = logging.getLogger(__name__)

#: ``fairseq-preprocess`` default when the task config does not name the dictionary files.
_DICT_PATTERN = "dict.{lang}.txt"


def task_config(state: dict[str, Any]) -> dict[str, Any]:
    """The task section of a loaded checkpoint's config, as a plain dict."""
    cfg = state.get("cfg")
    if cfg is not None:
        task = cfg["task"] if "task" in cfg else {}
        return dict(task.items()) if task is not None else {}
    args = state.get("args")
    return vars(args) if isinstance(args, Namespace) else {}


def resolve_languages(
    state: dict[str, Any], data_bin: Path, source_lang: str | None, target_lang: str | None
) -> tuple[str, str]:
    """Source and target language: the options, else the checkpoint's task, else the data-bin."""
    task = task_config(state)
    src = source_lang or task.get("source_lang")
    tgt = target_lang or task.get("target_lang")
    if src and tgt:
        return src, tgt
    pairs = sorted({p.name.split(".")[1] for p in data_bin.glob("*.*-*.*.idx")})
    if len(pairs) == 1:
        return tuple(pairs[0].split("-"))  # type: ignore[return-value]
    raise InputError(
        f"cannot tell the language pair of {data_bin} (found pairs: {', '.join(pairs) or 'none'}); "
        "pass --source-lang and --target-lang"
    )


def subset_files(data_bin: Path, subset: str, src: str, tgt: str) -> list[list[Path]]:
    """The file sets fairseq's translation task accepts for ``subset`` (either pair ordering)."""
    return [
        [data_bin / f"{subset}.{a}-{b}.{lang}.{ext}" for lang in (src, tgt) for ext in ("bin", "idx")]
        for a, b in ((src, tgt), (tgt, src))
    ]


def available_subsets(data_bin: Path) -> list[str]:
    """Names of the binarized subsets present in ``data_bin`` (e.g. ``train``, ``valid``, ``test``)."""
    return sorted({p.name.split(".")[0] for p in data_bin.glob("*.*-*.*.idx")})


def check_subset(data_bin: Path, subset: str, src: str, tgt: str) -> None:
    """Raise :class:`InputError` naming the files looked for if ``subset`` is not binarized."""
    candidates = subset_files(data_bin, subset, src, tgt)
    if any(all(path.is_file() for path in files) for files in candidates):
        return
    looked_for = "; ".join(", ".join(p.name for p in files) for files in candidates)
    available = ", ".join(available_subsets(data_bin)) or "none"
    raise InputError(
        f"subset '{subset}' ({src}-{tgt}) not found in {data_bin}: looked for {looked_for}. "
        f"Subsets present: {available}. Binarize it with fairseq-preprocess --testpref/--validpref, "
        "or pick one of those with --subset"
    )


def load_symbols(path: Path) -> list[str]:
    """Symbols of a fairseq dictionary file, special symbols first, as ``Dictionary.load`` gives them."""
    from fairseq.data import Dictionary

    return list(Dictionary.load(str(path)).symbols)


def _embedding_rows(model_state: dict[str, Any], side: str) -> int | None:
    prefix = "encoder" if side == "source" else "decoder"
    for key in (f"{prefix}.embed_tokens.weight", f"{prefix}.output_projection.weight"):
        if key in model_state and hasattr(model_state[key], "shape"):
            return int(model_state[key].shape[0])
    return None


def _first_difference(a: Sequence[str], b: Sequence[str]) -> str:
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at index {index}: checkpoint has {x!r}, data-bin has {y!r}"
    return f"the checkpoint's has {len(a):,} symbols, the data-bin's {len(b):,}"


def dictionary_problems(state: dict[str, Any], data_bin: Path, src: str, tgt: str) -> list[str]:
    """Ways in which the checkpoint's dictionaries differ from ``data_bin``'s (empty if none found).

    Compares symbol by symbol with the dictionaries in the directory the model was trained on
    (``cfg.task.data``) when it is still there, and always compares the embedding sizes stored in
    the checkpoint with the data-bin's dictionary sizes.
    """
    train_dir = task_config(state).get("data")
    train_dir = Path(str(train_dir).split(":")[0]) if train_dir else None
    problems = []
    for side, lang in (("source", src), ("target", tgt)):
        ours = data_bin / _DICT_PATTERN.format(lang=lang)
        if not ours.is_file():
            problems.append(f"{side} side: {ours} is missing")
            continue
        data_symbols = load_symbols(ours)
        theirs = train_dir / _DICT_PATTERN.format(lang=lang) if train_dir else None
        if theirs is not None and theirs.is_file() and theirs.resolve() != ours.resolve():
            ckpt_symbols = load_symbols(theirs)
            if ckpt_symbols != data_symbols:
                problems.append(f"{side} side: {theirs} (used in training) differs from {ours}: "
                                + _first_difference(ckpt_symbols, data_symbols))
                continue
        elif theirs is None or not theirs.is_file():
            logger.info("%s dictionary: training data-bin %s not found; checking sizes only", side, train_dir)
        rows = _embedding_rows(state.get("model", {}), side)
        if rows is not None and rows != len(data_symbols):
            problems.append(
                f"{side} side: the model's {side} embedding has {rows:,} rows but {ours} "
                f"gives a {len(data_symbols):,}-symbol dictionary"
            )
    return problems


def check_dictionaries(state: dict[str, Any], data_bin: Path, src: str, tgt: str) -> None:
    """Raise :class:`InputError` if the checkpoint was trained with other dictionaries."""
    problems = dictionary_problems(state, data_bin, src, tgt)
    if not problems:
        return
    train_dir = task_config(state).get("data") or "the model's training data-bin"
    raise InputError(
        "dictionary mismatch between checkpoint and --data-bin: " + "; ".join(problems) + ". "
        f"Evaluate with the data-bin the model was trained on, or binarize the test set with the "
        f"model's dictionaries: fairseq-preprocess --srcdict {train_dir}/dict.{src}.txt "
        f"--tgtdict {train_dir}/dict.{tgt}.txt ..."
    )
