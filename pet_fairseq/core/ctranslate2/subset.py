"""A binarized subset as a CTranslate2 model's input: source token lists and the references.

CTranslate2 takes tokens as strings and adds EOS itself, so :func:`read_subset` turns a
``fairseq-preprocess`` subset back into symbol lists (without EOS), in sentence-id order, with the
references rendered as fairseq-generate's T lines (:func:`pet_fairseq.core.decode.translate_subset`).
fairseq is imported when a subset is read.
"""

from pathlib import Path
from typing import List, Tuple

from pet_fairseq.core.checks import check_subset, subset_files


def read_subset(data_bin: Path, subset: str, src: str, tgt: str) -> Tuple[List[List[str]], List[str]]:
    """Source token lists (without EOS, which CTranslate2 adds) and reference strings of a binarized subset,
    in sentence-id order; references are rendered as :mod:`pet_fairseq.core.decode` renders them."""
    from fairseq.data import Dictionary, data_utils

    check_subset(data_bin, subset, src, tgt)
    files = next(f for f in subset_files(data_bin, subset, src, tgt) if all(p.is_file() for p in f))
    src_dict, tgt_dict = (Dictionary.load(str(data_bin / f"dict.{lang}.txt")) for lang in (src, tgt))
    src_data = data_utils.load_indexed_dataset(str(files[0])[: -len(".bin")], src_dict)
    tgt_data = data_utils.load_indexed_dataset(str(files[2])[: -len(".bin")], tgt_dict)
    strip = {tgt_dict.eos()}
    sources = [[src_dict[i] for i in src_data[n].tolist() if i != src_dict.eos()] for n in range(len(src_data))]
    references = [tgt_dict.string(tgt_data[n], None, escape_unk=True, extra_symbols_to_ignore=strip)
                  for n in range(len(tgt_data))]
    return sources, references
