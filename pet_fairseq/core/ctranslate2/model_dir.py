"""CTranslate2 model directories: recognise them, read what they hold, check them against a data-bin.

A model directory is what ``python -m pet_fairseq.export ctranslate2`` writes
(:mod:`pet_fairseq.core.ctranslate2.convert`): ``model.bin``, the vocabularies and :data:`EXPORT_INFO`
(where the model came from, its language pair), and ``vmap.txt`` when it stores a vocabulary
shortlist. This module reads such directories; it neither converts nor decodes. The parameters it
counts are read from ``model.bin`` itself (:func:`read_model_variables`), without CTranslate2.

``ctranslate2`` is an optional extra (``pip install -e .[ctranslate2]``); :func:`require_ctranslate2`
says how to install it. Importing this module imports neither torch nor fairseq (the torch-free
worker counts parameters with it).
"""

import json
import os
import struct
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from pet_fairseq.core.checks import load_symbols
from pet_fairseq.core.errors import InputError

#: written next to model.bin: where the model came from and its language pair
EXPORT_INFO = "pet_export.json"
#: the vocabulary-mapping file CTranslate2's converter stores in a model directory
VMAP = "vmap.txt"
#: CTranslate2's ``DataType`` ids in model.bin (``include/ctranslate2/types.h``): name, bytes per element
_DTYPES = {0: ("float32", 4), 1: ("int8", 1), 2: ("int16", 2), 3: ("int32", 4), 4: ("float16", 2), 5: ("bfloat16", 2)}


def require_ctranslate2():
    """The ``ctranslate2`` module, or an :class:`InputError` saying how to install it."""
    try:
        import ctranslate2
    except ImportError as exc:
        raise InputError("the ctranslate2 package is not installed: pip install -e '.[ctranslate2]' "
                         "(or pip install 'ctranslate2>=4.0')") from exc
    return ctranslate2


def is_model_dir(path: "str | os.PathLike") -> bool:
    """Whether ``path`` is a CTranslate2 model directory (a folder holding ``model.bin``)."""
    return Path(path).is_dir() and (Path(path) / "model.bin").is_file()


def has_shortlist(model_dir: "str | os.PathLike") -> bool:
    """Whether the model stores a vocabulary shortlist (``vmap.txt``, CTranslate2's ``use_vmap``).

    A model exported with a shortlist is decoded with it by every tool of this package: the
    shortlist is part of the deployed model, and its BLEU is the one to report.
    """
    return (Path(model_dir) / VMAP).is_file()


def export_info(model_dir: "str | os.PathLike") -> Dict[str, Any]:
    """What the export recorded about a model directory (empty for models converted elsewhere)."""
    path = Path(model_dir) / EXPORT_INFO
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# --------------------------------------------------------------------------------------------
# model.bin


def read_model_variables(model_bin: Path) -> List[Tuple[str, Tuple[int, ...], str]]:
    """(name, shape, dtype) of every variable stored in a CTranslate2 ``model.bin`` (aliases excluded)."""
    variables = []
    with open(model_bin, "rb") as f:

        def unpack(fmt: str):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def string() -> str:
            return f.read(unpack("H")).rstrip(b"\0").decode("utf-8")

        version = unpack("I")
        if not 5 <= version <= 6:
            raise ValueError(f"{model_bin}: unsupported CTranslate2 binary version {version}")
        string()  # spec name
        unpack("I")  # spec revision
        for _ in range(unpack("I")):
            name = string()
            shape = tuple(unpack("I") for _ in range(unpack("B")))
            dtype = _DTYPES[unpack("B")][0]
            f.seek(unpack("I"), 1)
            variables.append((name, shape, dtype))
    return variables


def count_parameters(model_dir: Path) -> int:
    """Weights stored in a CTranslate2 model: elements of its variables, tied ones once.

    The converter stores variables that are equal (tied embeddings, and the layers of an unrolled
    student that are unchanged copies of one another) once, as aliases, so this is what the file
    really holds. Quantization scales (``*_scale``), scalar settings and the sinusoidal position
    tables (fairseq computes those; they are not parameters) are left out, so an int8 model counts
    the same parameters as its float32 original.
    """
    total = 0
    for name, shape, _ in read_model_variables(Path(model_dir) / "model.bin"):
        if name.endswith(("_scale", "position_encodings/encodings")) or not shape:
            continue
        numel = 1
        for dim in shape:
            numel *= dim
        total += numel
    return total


def directory_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (what deploying the model directory copies)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------
# vocabularies


def _vocabulary(model_dir: Path, side: str) -> Optional[List[str]]:
    for name in (f"{side}_vocabulary.json", "shared_vocabulary.json"):
        if (model_dir / name).is_file():
            return json.loads((model_dir / name).read_text(encoding="utf-8"))
    return None


def check_vocabularies(model_dir: Path, data_bin: Path, src: str, tgt: str) -> None:
    """Raise :class:`InputError` if the model's vocabularies are not the data-bin's dictionaries."""
    problems = []
    for side, lang in (("source", src), ("target", tgt)):
        vocab = _vocabulary(model_dir, side)
        path = data_bin / f"dict.{lang}.txt"
        if vocab is None or not path.is_file():
            problems.append(f"{side}: {'no vocabulary in ' + str(model_dir) if vocab is None else str(path) + ' is missing'}")
            continue
        symbols = ["<blank>" if s == "<pad>" else s for s in load_symbols(path)]  # as the converter writes them
        if vocab != symbols:
            first = next((i for i, (x, y) in enumerate(zip(vocab, symbols)) if x != y), min(len(vocab), len(symbols)))
            problems.append(f"{side}: the model's {len(vocab):,}-entry vocabulary differs from {path} "
                            f"({len(symbols):,} symbols) at index {first}")
    if problems:
        raise InputError("vocabulary mismatch between the CTranslate2 model and the data-bin: " + "; ".join(problems))
