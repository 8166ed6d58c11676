"""Batched beam search over subword token lists with a CTranslate2 export of a student or teacher.

The model directory is the one ``python -m pet_fairseq.export ctranslate2`` writes; loading,
batching (sorted by length, as fairseq batches) and beam search are
:mod:`pet_fairseq.core.ctranslate2.decoding`'s, with the checks of :mod:`pet_fairseq.core.ctranslate2.model_dir`
(the model's vocabularies must be the data-bin's dictionaries). A model that stores a vocabulary
shortlist is decoded with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pet_fairseq.core.checks import resolve_languages
from pet_fairseq.core.ctranslate2 import decoding
from pet_fairseq.core.ctranslate2.model_dir import (
    check_vocabularies,
    export_info,
    has_shortlist,
    is_model_dir,
    read_model_variables,
    require_ctranslate2,
)
from pet_fairseq.core.direction import check_direction
from pet_fairseq.translate.lines import TranslateError

#: fairseq's default ``max_source_positions``, assumed when model.bin holds no position table
DEFAULT_SOURCE_POSITIONS = 1024


def source_positions(model_dir: Path) -> int:
    """Source positions the model can encode: rows of the encoder's sinusoidal table in ``model.bin``.

    CTranslate2's fairseq converter stores fairseq's table without its padding rows, so the row
    count is the checkpoint's ``max_source_positions`` (end-of-sentence included).
    """
    for name, shape, _ in read_model_variables(model_dir / "model.bin"):
        if name.startswith("encoder") and name.endswith("position_encodings/encodings") and shape:
            return int(shape[0])
    return DEFAULT_SOURCE_POSITIONS


class CTranslate2Model:
    """A CTranslate2 translator ready for batched beam search (see :class:`pet_fairseq.translate.lines.Backend`)."""

    def __init__(self, translator, max_source_tokens: int, beam: int, max_len_a: float, max_len_b: int,
                 batch_size: int, use_vmap: bool = False) -> None:
        self.translator, self.max_source_tokens = translator, max_source_tokens
        self.beam, self.max_len_a, self.max_len_b, self.batch_size = beam, max_len_a, max_len_b, batch_size
        self.use_vmap = use_vmap

    def translate(self, sources: list[list[str]]) -> list[str]:
        """Best hypotheses (BPE kept) of ``sources``, in input order."""
        batches = decoding.make_batches([len(s) for s in sources], self.batch_size, None)
        results = decoding.translate(self.translator, sources, batches, self.beam, self.max_len_a, self.max_len_b,
                                     self.use_vmap)
        return [" ".join(results[i][0]) for i in range(len(sources))]


def load_ctranslate2_model(model_dir: Path, data_bin: Optional[Path], source_lang: Optional[str],
                           target_lang: Optional[str], device: str, threads: int, beam: int, max_len_a: float,
                           max_len_b: int, batch_size: int,
                           parallel_batches: int = 1,
                           use_shortlist: bool = True) -> tuple[CTranslate2Model, Path, tuple[str, str]]:
    """Load a CTranslate2 model directory; ``data_bin`` defaults to the one recorded at export.

    ``parallel_batches``: decode each batch as that many parts side by side on ``threads / parallel_batches``
    threads each (:func:`pet_fairseq.core.ctranslate2.decoding.load_translator`). ``use_shortlist``: decode
    with the model's vocabulary shortlist when it stores one (False: over the whole target vocabulary).

    Returns the model, the data-bin (where the recipe is) and the (source, target) languages:
    the options, else those recorded at export, else the data-bin's only pair. Options that
    contradict the direction recorded at export are refused.
    """
    require_ctranslate2()
    if not is_model_dir(model_dir):
        raise TranslateError(f"{model_dir} is not a CTranslate2 model directory (no model.bin)")
    info = export_info(model_dir)
    check_direction(str(model_dir), (info.get("source_lang"), info.get("target_lang")), source_lang, target_lang,
                    TranslateError)
    data_bin = data_bin or (Path(info["data_bin"]) if info.get("data_bin") else None)
    if data_bin is None or not data_bin.is_dir():
        raise TranslateError(f"{model_dir}: the data-bin it was exported from ({data_bin or 'not recorded'}) is not a "
                             "folder: pass --data-bin DIR (its dictionaries and preprocessing.json are needed)")
    langs = resolve_languages({"cfg": {"task": info}}, data_bin, source_lang, target_lang)
    check_vocabularies(model_dir, data_bin, *langs)
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise TranslateError(f"--device {device}: CTranslate2 models run on cpu or cuda")
    try:
        translator = decoding.load_translator(str(model_dir), threads, device.split(":")[0],
                                              parallel_batches=parallel_batches)
    except ValueError as exc:
        raise TranslateError(f"--parallel-batches {parallel_batches} with --threads {threads}: {exc}") from exc
    model = CTranslate2Model(translator, source_positions(model_dir) - 1, beam, max_len_a, max_len_b, batch_size,
                             use_vmap=use_shortlist and has_shortlist(model_dir))
    return model, data_bin, langs
