"""The corpus side of sequence-level KD: shards of a binarized split, shard files, and the merge.

A split of ``n`` sentence pairs is cut into ``num_shards`` contiguous ranges
(shard ``i`` holds sentences ``⌊n·i/N⌋ … ⌊n·(i+1)/N⌋ − 1``). A finished shard is two files of
fairseq's mmap format (the teacher's hypotheses, EOS appended as ``fairseq-preprocess`` does) and
a JSON record written last, atomically: a shard without its record is unfinished and decoded
again. Every record carries the run's *fingerprint* (teacher, source split, decoding options,
shard count); the merge refuses shards of another fingerprint, a missing shard or a short one.

The merge writes a complete data-bin into a temporary folder next to ``out`` and renames it into
place: the split's sources unchanged, its targets replaced by the hypotheses, the dictionaries and
every other split copied byte for byte, and the source data-bin's preprocessing recipe
(``preprocessing.json``) with the subword model it names, so that a model trained on ``out`` can
translate raw text (``python -m pet_fairseq.translate``) without naming the original data-bin.
``out/seqkd.json``, written last, marks the corpus finished. A corpus in which more than
``max_replaced`` of the hypotheses would be replaced by references or dropped is refused before
anything is written (the shards stay, so accepting it later decodes nothing again).
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch
from fairseq.data import Dictionary, data_utils, indexed_dataset

from pet_fairseq.core import files
from pet_fairseq.core.errors import PetError
from pet_fairseq.core.files import write_json_atomic
from pet_fairseq.preprocessing.files import PrepError
from pet_fairseq.preprocessing.recipe import RECIPE_FILE, read_recipe

#: what happens to a hypothesis that is empty or reached the length limit
DEGENERATE_POLICIES = ("reference", "keep", "drop")
#: default of ``--max-replaced``: the largest share of hypotheses that may be replaced by references or dropped
MAX_REPLACED = 0.2
#: the file that marks a finished corpus (written last by :func:`merge`)
SUMMARY_FILE = "seqkd.json"
RECORD_VERSION = 1


class SeqKDError(PetError, ValueError):
    """Bad input or an inconsistent work folder; the message names the problem and the fix."""


@dataclass(frozen=True)
class Split:
    """A binarized split of a data-bin: its dictionaries and its source and target datasets."""

    data_bin: Path
    name: str
    src: str
    tgt: str
    src_dict: Dictionary
    tgt_dict: Dictionary
    sources: Any  # fairseq indexed dataset of source token ids (EOS appended)
    targets: Any

    def __len__(self) -> int:
        return len(self.sources)

    def prefix(self, lang: str) -> Path:
        return self.data_bin / f"{self.name}.{self.src}-{self.tgt}.{lang}"


def infer_pair(data_bin: Path, split: str) -> tuple[str, str]:
    """The language pair of ``split``, else of the data-bin when it holds exactly one (:func:`core.files.infer_pair`)."""
    try:
        return files.infer_pair(data_bin, split)
    except ValueError as err:
        raise SeqKDError(str(err)) from None


def load_split(data_bin: Path, name: str, src: str, tgt: str) -> Split:
    """Read ``name`` (e.g. ``train``) of ``data_bin``; raise :class:`SeqKDError` naming missing files."""
    if not data_bin.is_dir():
        raise SeqKDError(f"data-bin {data_bin} is not a folder; binarize your data first (data_prep/prepare-*.sh)")
    dicts = [data_bin / f"dict.{lang}.txt" for lang in (src, tgt)]
    files = dicts + [data_bin / f"{name}.{src}-{tgt}.{lang}.{ext}" for lang in (src, tgt) for ext in ("bin", "idx")]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        present = sorted({p.name.split(".")[0] for p in data_bin.glob("*.*-*.*.idx")})
        raise SeqKDError(f"{data_bin} lacks {', '.join(missing)} (splits present: {', '.join(present) or 'none'}); "
                         "pick another --split or --source-lang/--target-lang")
    src_dict, tgt_dict = (Dictionary.load(str(p)) for p in dicts)
    sources = data_utils.load_indexed_dataset(str(data_bin / f"{name}.{src}-{tgt}.{src}"), src_dict)
    targets = data_utils.load_indexed_dataset(str(data_bin / f"{name}.{src}-{tgt}.{tgt}"), tgt_dict)
    if len(sources) != len(targets):
        raise SeqKDError(f"{data_bin}: split '{name}' has {len(sources)} sources but {len(targets)} targets")
    return Split(data_bin, name, src, tgt, src_dict, tgt_dict, sources, targets)


def shard_range(size: int, num_shards: int, shard_id: int) -> range:
    """Sentence indices of shard ``shard_id`` of ``num_shards`` contiguous, balanced shards (:func:`core.files.shard_range`)."""
    try:
        return files.shard_range(size, num_shards, shard_id)
    except ValueError as err:
        raise SeqKDError(str(err)) from None


def shard_stem(work: Path, shard_id: int, num_shards: int) -> Path:
    return work / f"shard-{shard_id:04d}-of-{num_shards:04d}"


def write_shard(work: Path, shard_id: int, num_shards: int, hypotheses: Sequence[Sequence[int]], eos: int,
                vocab_size: int, record: Dict[str, Any]) -> None:
    """Write one finished shard: hypotheses (token ids without EOS) as an mmap dataset, then its record."""
    stem = shard_stem(work, shard_id, num_shards)
    tmp = stem.with_name(stem.name + ".tmp")
    builder = indexed_dataset.make_builder(str(tmp) + ".bin", impl="mmap", vocab_size=vocab_size)
    for hyp in hypotheses:
        builder.add_item(torch.tensor(list(hyp) + [eos], dtype=torch.int64))
    builder.finalize(str(tmp) + ".idx")
    for ext in (".bin", ".idx"):
        os.replace(str(tmp) + ext, str(stem) + ext)
    write_json_atomic(stem.with_suffix(".json"), {**record, "version": RECORD_VERSION, "items": len(hypotheses)})


def read_record(work: Path, shard_id: int, num_shards: int) -> Dict[str, Any] | None:
    """The record of a finished shard, or ``None`` when the shard is not finished."""
    path = shard_stem(work, shard_id, num_shards).with_suffix(".json")
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_record(record: Dict[str, Any], fingerprint: Dict[str, Any], work: Path, shard_id: int) -> None:
    """Refuse a shard written by another teacher, split or set of decoding options."""
    theirs = record.get("fingerprint", {})
    differing = sorted(k for k in set(theirs) | set(fingerprint) if theirs.get(k) != fingerprint.get(k))
    if differing:
        raise SeqKDError(
            f"{work} holds shard {shard_id} made with different {', '.join(differing)} "
            f"({', '.join(f'{k}: {theirs.get(k)!r} there, {fingerprint.get(k)!r} now' for k in differing[:3])}); "
            "use the same options, another --work-dir, or delete that folder to start over"
        )


def finished_shards(work: Path, num_shards: int, fingerprint: Dict[str, Any]) -> List[int]:
    """Ids of the shards in ``work`` that are finished with this ``fingerprint``."""
    done = []
    for shard_id in range(num_shards):
        record = read_record(work, shard_id, num_shards)
        if record is not None:
            check_record(record, fingerprint, work, shard_id)
            done.append(shard_id)
    return done


def source_recipe(data_bin: Path) -> tuple[Path, Path | None] | None:
    """The data-bin's recipe file and the subword model it names (absolute), or ``None`` without a recipe.

    The recipe is read with :func:`pet_fairseq.preprocessing.recipe.read_recipe`; a recipe that does
    not read (bad JSON, missing fields, a subword model that is not there) is a :class:`SeqKDError`,
    since the distilled data-bin would inherit it.
    """
    path = data_bin / RECIPE_FILE
    if not path.is_file():
        return None
    try:
        recipe = read_recipe(path)
    except PrepError as err:
        raise SeqKDError(f"{err} (the seq-KD data-bin inherits {path}: fix or remove it first)") from None
    return path, recipe.bpe_model


def inherit_recipe(data_bin: Path, dest: Path) -> List[str]:
    """Copy ``data_bin``'s recipe and its subword model into ``dest``; return the names written there.

    A model inside ``data_bin`` is copied to the same relative path, so the recipe is copied byte for
    byte and its relative ``bpe_model`` resolves in ``dest``. A model outside ``data_bin`` is copied
    into ``dest`` under its file name and the recipe rewritten to name that copy.
    """
    found = source_recipe(data_bin)
    if found is None:
        return []
    path, model = found
    if model is None:
        shutil.copy2(path, dest / RECIPE_FILE)
        return [RECIPE_FILE]
    try:
        relative = model.resolve().relative_to(data_bin.resolve())
    except ValueError:
        relative = None
    if relative is not None:
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(model, dest / relative)
        shutil.copy2(path, dest / RECIPE_FILE)
        return [RECIPE_FILE, relative.as_posix()]
    if (dest / model.name).exists() or model.name in (RECIPE_FILE, SUMMARY_FILE):
        raise SeqKDError(f"{path} names the subword model {model}, whose file name {model.name} clashes with a "
                         "file of the data-bin; rename the model and update bpe_model in the recipe")
    shutil.copy2(model, dest / model.name)
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["bpe_model"] = model.name
    (dest / RECIPE_FILE).write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    return [RECIPE_FILE, model.name]


def check_replaced(flagged: int, sentences: int, degenerate: str, max_replaced: float, empty: int, runaway: int,
                   fingerprint: Dict[str, Any], work: Path) -> str | None:
    """Refuse (:class:`SeqKDError`) a corpus in which more than ``max_replaced`` of the hypotheses would be
    replaced by references (``reference``) or dropped (``drop``); with ``keep`` return a warning instead.

    ``flagged`` = ``empty`` + ``runaway`` hypotheses of ``sentences``; returns ``None`` within the limit.
    """
    share = flagged / sentences if sentences else 0.0
    if share <= max_replaced:
        return None
    what = {"reference": "would be replaced by their references", "drop": "would be dropped",
            "keep": "are kept as they are"}[degenerate]
    limit = (f"--max-len-a {fingerprint['max_len_a']}, --max-len-b {fingerprint['max_len_b']}"
             if "max_len_a" in fingerprint and "max_len_b" in fingerprint else "--max-len-a, --max-len-b")
    counts = (f"{flagged:,} of {sentences:,} hypotheses ({100 * share:.1f} %: {empty:,} empty, {runaway:,} at the "
              f"length limit) {what} (--degenerate {degenerate})")
    cause = f"the teacher is likely undertrained, or the length limit ({limit}) too short"
    if degenerate == "keep":
        return f"warning: {counts}: {cause}"
    raise SeqKDError(f"{counts}, more than --max-replaced {max_replaced:g} allows: {cause}. Check the teacher "
                     f"(its BLEU) or raise the limit, or accept this corpus with --max-replaced 1 (the decoded "
                     f"shards stay in {work}: nothing is decoded again)")


def _dataset_from(prefix: Path, vocab_size: int, items) -> None:
    builder = indexed_dataset.make_builder(str(prefix) + ".bin", impl="mmap", vocab_size=vocab_size)
    for item in items:
        builder.add_item(item)
    builder.finalize(str(prefix) + ".idx")


def merge(split: Split, work: Path, out: Path, num_shards: int, fingerprint: Dict[str, Any],
          degenerate: str = "reference", force: bool = False, max_replaced: float = MAX_REPLACED) -> Dict[str, Any]:
    """Check that every shard is present and complete, then write the distilled data-bin ``out``.

    ``degenerate`` says what becomes of an empty hypothesis or one that reached the length limit:
    ``reference`` puts the reference target in its place, ``keep`` keeps it, ``drop`` removes the
    sentence pair. When more than ``max_replaced`` (a share, 0-1) of the hypotheses would be replaced
    or dropped, nothing is written and :class:`SeqKDError` says so; with ``keep`` the summary carries
    a ``warning`` instead. The source data-bin's recipe and subword model are copied along
    (:func:`inherit_recipe`). Returns the summary also written to ``out/seqkd.json``.
    """
    if degenerate not in DEGENERATE_POLICIES:
        raise SeqKDError(f"--degenerate must be one of {', '.join(DEGENERATE_POLICIES)}, not {degenerate!r}")
    if not 0 <= max_replaced <= 1:
        raise SeqKDError(f"--max-replaced must be a share between 0 and 1 (got {max_replaced})")
    records, problems = [], []
    for shard_id in range(num_shards):
        record = read_record(work, shard_id, num_shards)
        expected = shard_range(len(split), num_shards, shard_id)
        if record is None:
            problems.append(f"shard {shard_id} is missing")
            continue
        check_record(record, fingerprint, work, shard_id)
        if (record["start"], record["stop"], record["items"]) != (expected.start, expected.stop, len(expected)):
            problems.append(f"shard {shard_id} holds {record['items']} of sentences {expected.start}-{expected.stop - 1}")
        records.append(record)
    if problems:
        raise SeqKDError(f"cannot merge {work}: {'; '.join(problems)}. Decode the missing shards "
                         "(--shard-id I, or run without --shard-id to decode all unfinished ones)")
    flagged = {i for r in records for i in r["empty"] + r["runaway"]}
    empty, runaway = sum(len(r["empty"]) for r in records), sum(len(r["runaway"]) for r in records)
    warning = check_replaced(len(flagged), len(split), degenerate, max_replaced, empty, runaway, fingerprint, work)
    if out.exists() and not out.is_dir():
        raise SeqKDError(f"--out {out} is a file: the distilled data-bin is a folder; choose another --out")
    if out.exists() and any(out.iterdir()) and not force:
        raise SeqKDError(f"{out} exists and is not empty; pass --force to replace it, or choose another --out")

    keep = [i for i in range(len(split)) if not (degenerate == "drop" and i in flagged)]
    hypotheses = [indexed_dataset.MMapIndexedDataset(str(shard_stem(work, s, num_shards))) for s in range(num_shards)]
    starts = [r["start"] for r in records]

    def target(i: int) -> torch.Tensor:
        if degenerate == "reference" and i in flagged:
            return split.targets[i]
        shard = bisect.bisect_right(starts, i) - 1
        return hypotheses[shard][i - starts[shard]]

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for path in sorted(split.data_bin.iterdir()):
            own = path.name.startswith(f"{split.name}.{split.src}-{split.tgt}.")
            if path.is_file() and not own and (path.name.startswith("dict.") or path.suffix in (".bin", ".idx")):
                shutil.copy2(path, tmp / path.name)
        recipe = inherit_recipe(split.data_bin, tmp)
        _dataset_from(tmp / f"{split.name}.{split.src}-{split.tgt}.{split.src}", len(split.src_dict),
                      (split.sources[i] for i in keep))
        _dataset_from(tmp / f"{split.name}.{split.src}-{split.tgt}.{split.tgt}", len(split.tgt_dict),
                      (target(i) for i in keep))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = sum(r["seconds"] for r in records)
    tokens = sum(r["tokens"] for r in records)
    summary = {
        "fingerprint": fingerprint, "sentences": len(split), "written": len(keep), "degenerate_policy": degenerate,
        "empty": empty, "runaway": runaway,
        "degenerate_share": round(len(flagged) / len(split), 4) if len(split) else 0.0, "max_replaced": max_replaced,
        "warning": warning, "recipe": recipe,
        "hypothesis_tokens": tokens, "decode_seconds": round(seconds, 2),
        "sentences_per_second": round(len(split) / seconds, 2) if seconds else None,
        "tokens_per_second": round(tokens / seconds, 1) if seconds else None,
    }
    (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return summary
