"""The preprocessing recipe of a data-bin: what raw text goes through before the model sees it.

``data_prep/prepare-*.sh`` write it after ``fairseq-preprocess`` as ``DATA_BIN/preprocessing.json``
(``python -m pet_fairseq.preprocessing recipe OUT``) and copy the subword model next to it, so the
data-bin alone says how to prepare new text; ``python -m pet_fairseq.translate`` reads it back::

    {"format": 1, "dataset": "multi30k", "source_lang": "de", "target_lang": "en",
     "tokenizer": "moses", "moses_aggressive_dash_splits": false, "lowercase": true,
     "bpe": "subword_nmt", "bpe_model": "bpe.code"}

``bpe`` uses fairseq's ``--bpe`` names (``subword_nmt``, ``sentencepiece`` or ``none``);
``bpe_model`` (subword-nmt codes or a sentencepiece ``.model``) is relative to the recipe's folder
or absolute. Moses tokenizes with each side's own language. Data-bins prepared by other means
can get a hand-written recipe file of this form.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from pet_fairseq.preprocessing.bpe import SENTENCEPIECE, SUBWORD_NMT
from pet_fairseq.preprocessing.files import PrepError
from pet_fairseq.preprocessing.text import TokenizeConfig

RECIPE_FILE = "preprocessing.json"
FORMAT = 1
#: our subword method names -> fairseq's ``--bpe`` names
FAIRSEQ_BPE = {SUBWORD_NMT: "subword_nmt", SENTENCEPIECE: "sentencepiece"}
BPE_KINDS = ("subword_nmt", "sentencepiece", "none")
TOKENIZERS = ("moses", "none")


@dataclass(frozen=True)
class DataRecipe:
    """How the text of one data-bin was prepared (and so how new text must be)."""

    source_lang: str
    target_lang: str
    lowercase: bool
    bpe: str = "none"  # fairseq's --bpe name: subword_nmt, sentencepiece or none
    bpe_model: Path | None = None  # codes file or sentencepiece model; absolute once read
    tokenizer: str = "moses"  # moses or none
    moses_aggressive_dash_splits: bool = False  # tokenizer.perl -a (WMT)
    dataset: str = ""

    @property
    def languages(self) -> tuple[str, str]:
        return self.source_lang, self.target_lang

    def tokenize_config(self, lang: str) -> TokenizeConfig:
        """The per-line Moses tokenization (and lowercasing) of ``lang`` text, as for valid/test."""
        return TokenizeConfig(lang=lang, aggressive=self.moses_aggressive_dash_splits, lowercase=self.lowercase)

    def to_json(self, folder: Path) -> dict:
        """The recipe as written to ``folder/preprocessing.json`` (``bpe_model`` relative to ``folder`` when inside it)."""
        model = None
        if self.bpe_model is not None:
            model = Path(self.bpe_model)
            try:
                model = model.resolve().relative_to(folder.resolve())
            except ValueError:
                model = model.resolve()
        return {"format": FORMAT, "dataset": self.dataset, "source_lang": self.source_lang,
                "target_lang": self.target_lang, "tokenizer": self.tokenizer,
                "moses_aggressive_dash_splits": self.moses_aggressive_dash_splits, "lowercase": self.lowercase,
                "bpe": self.bpe, "bpe_model": None if model is None else str(model)}


def recipe_path(location: str | Path) -> Path:
    """``location`` itself when it is a file, else ``location/preprocessing.json``."""
    location = Path(location)
    return location if location.is_file() else location / RECIPE_FILE


def read_recipe(location: str | Path) -> DataRecipe:
    """Read the recipe file at ``location`` (a data-bin or the file); PrepError says what is missing or wrong."""
    path = recipe_path(location)
    if not path.is_file():
        raise PrepError(
            f"{path} not found: the data-bin was not prepared by data_prep/prepare-*.sh (which write it). "
            f"Write one by hand (see docs/translate.md), e.g. {{\"source_lang\": \"de\", \"target_lang\": \"en\", "
            f"\"tokenizer\": \"moses\", \"lowercase\": true, \"bpe\": \"subword_nmt\", \"bpe_model\": \"/path/to/code\"}}, "
            "and pass it with --recipe"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PrepError(f"{path} is not valid JSON ({err}); rewrite it or rerun the preparation") from None
    missing = [key for key in ("source_lang", "target_lang", "lowercase") if key not in raw]
    if missing:
        raise PrepError(f"{path} lacks {', '.join(missing)}; see docs/translate.md for the recipe's fields")
    bpe, tokenizer = raw.get("bpe") or "none", raw.get("tokenizer") or "moses"
    if bpe not in BPE_KINDS or tokenizer not in TOKENIZERS:
        raise PrepError(f"{path}: bpe must be one of {', '.join(BPE_KINDS)} (got {bpe!r}) and tokenizer one of "
                        f"{', '.join(TOKENIZERS)} (got {tokenizer!r})")
    model = None
    if bpe != "none":
        if not raw.get("bpe_model"):
            raise PrepError(f"{path}: bpe {bpe} needs bpe_model (the codes file or sentencepiece model)")
        model = Path(raw["bpe_model"])
        model = model if model.is_absolute() else path.parent / model
        if not model.is_file():
            raise PrepError(f"{path}: its bpe_model {model} does not exist; copy the subword model there or fix the path")
    return DataRecipe(source_lang=raw["source_lang"], target_lang=raw["target_lang"], lowercase=bool(raw["lowercase"]),
                      bpe=bpe, bpe_model=model, tokenizer=tokenizer,
                      moses_aggressive_dash_splits=bool(raw.get("moses_aggressive_dash_splits", False)),
                      dataset=raw.get("dataset", ""))


def write_recipe(out: Path) -> Path:
    """Write ``out/data-bin/preprocessing.json`` for a finished preparation run into ``out``; return its path.

    Reads ``out/prep_stats.json`` (written by the text steps) and copies the subword model from
    ``out/bpe/`` into the data-bin, so that the data-bin alone is enough to prepare new text.
    """
    from pet_fairseq.preprocessing.pipeline import RECIPES

    stats_path = out / "prep_stats.json"
    if not stats_path.is_file():
        raise PrepError(f"{stats_path} not found: run the preparation into {out} first")
    stats = json.loads(stats_path.read_text(encoding="utf-8"))
    data_bin = out / "data-bin"
    if not (data_bin / f"dict.{stats['src']}.txt").is_file():
        raise PrepError(f"{data_bin} has no dict.{stats['src']}.txt: binarize with fairseq-preprocess first")
    model = out / "bpe" / Path(stats["bpe"]["model"]).name
    copied = data_bin / ("bpe.code" if stats["bpe"]["method"] == SUBWORD_NMT else "spm.model")
    shutil.copyfile(model, copied)
    recipe = DataRecipe(source_lang=stats["src"], target_lang=stats["tgt"], lowercase=bool(stats["lowercase"]),
                        bpe=FAIRSEQ_BPE[stats["bpe"]["method"]], bpe_model=copied, tokenizer="moses",
                        moses_aggressive_dash_splits=RECIPES[stats["dataset"]].aggressive, dataset=stats["dataset"])
    path = data_bin / RECIPE_FILE
    path.write_text(json.dumps(recipe.to_json(data_bin), indent=2) + "\n", encoding="utf-8")
    return path
