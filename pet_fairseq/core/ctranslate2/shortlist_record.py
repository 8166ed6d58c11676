"""The record of a vocabulary shortlist: what a vmap was built for, and the check that it fits a model.

A shortlist is only right for the model whose dictionaries and direction it was counted with
(:mod:`pet_fairseq.export.shortlist` builds it). Its record ``VMAP.json`` (:func:`record_path`,
format :data:`RECORD_FORMAT`) names the language pair and the data-bin, with the digests of both
dictionaries (:func:`dictionary_digest`) and of the vmap; :func:`check_shortlist` reads it before
the conversion (:mod:`pet_fairseq.core.ctranslate2.convert`) stores the vmap in a model, and
refuses a shortlist without a record, changed after it, or built for another pair or dictionaries.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pet_fairseq.core.checks import load_symbols
from pet_fairseq.core.errors import ExportError
from pet_fairseq.core.files import file_digest

#: version of the record written next to a vmap (:meth:`pet_fairseq.export.shortlist.Shortlist.write`)
RECORD_FORMAT = 1


def record_path(vmap: "str | Path") -> Path:
    """Where the record of the shortlist ``vmap`` lies: ``VMAP.json`` next to it."""
    vmap = Path(vmap)
    return vmap.with_name(vmap.name + ".json")


def dictionary_digest(path: Path) -> str:
    """SHA-256 of a fairseq dictionary's symbols in id order (what the model's token ids stand for)."""
    if not path.is_file():
        raise ExportError(f"the dictionary {path} does not exist; pass --data-bin with the model's data-bin")
    return hashlib.sha256("\n".join(load_symbols(path)).encode("utf-8")).hexdigest()


def check_shortlist(vmap: "str | Path", data_bin: "str | Path", source_lang: str, target_lang: str) -> dict:
    """The record of ``vmap`` if it was built for a ``source_lang``->``target_lang`` model with ``data_bin``'s
    dictionaries (``dict.{lang}.txt``); an :class:`ExportError` saying how to rebuild it otherwise.

    Refused: no record or an unreadable one, a vmap changed after its record was written, another
    language pair (swapped or different languages), another source or target dictionary.
    """
    vmap, data_bin = Path(vmap), Path(data_bin)
    rebuild = (f"rebuild it for this model with python -m pet_fairseq.export shortlist NEW.vmap --data-bin {data_bin} "
               f"--source-lang {source_lang} --target-lang {target_lang}")
    path = record_path(vmap)
    if not path.is_file():
        raise ExportError(f"the vocabulary shortlist {vmap} has no record of the language pair and dictionaries it was "
                          f"built for ({path} not found; shortlists written before this check have none): {rebuild}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise ExportError(f"{path} is not a shortlist record (format {RECORD_FORMAT}): {rebuild}")
    if file_digest(vmap) != record.get("vmap_sha256"):
        raise ExportError(f"the vocabulary shortlist {vmap} was changed after {path} was written for it: {rebuild}")
    built = (record.get("source_lang"), record.get("target_lang"))
    if built != (source_lang, target_lang):
        swapped = " (source and target swapped)" if built == (target_lang, source_lang) else ""
        raise ExportError(f"the vocabulary shortlist {vmap} was built for {built[0]}->{built[1]}{swapped}, but the "
                          f"model translates {source_lang}->{target_lang}: {rebuild}")
    for side, lang in (("source", source_lang), ("target", target_lang)):
        dictionary = data_bin / f"dict.{lang}.txt"
        if dictionary_digest(dictionary) != record.get(f"{side}_dictionary_sha256"):
            raise ExportError(f"the vocabulary shortlist {vmap} was built with the dictionaries of "
                              f"{record.get('data_bin')}, whose {side} dictionary is not the model's {dictionary}: "
                              f"{rebuild}")
    return record
