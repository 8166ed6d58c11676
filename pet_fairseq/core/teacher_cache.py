"""Cached teacher distributions: the teacher's top-k tokens and log-probabilities at every target position.

On a fixed corpus the teacher's teacher-forced distribution at a target position is a fixed function
of the sentence pair (the teacher is frozen and runs in eval mode), so word-level KD does not need
the teacher in the training loop: the distribution is computed once, its ``k`` most probable tokens
and their log-probabilities are stored, and every epoch reads them back.

A cache folder::

    cache.json     what it was made from (fingerprint: teacher and split SHA-256, languages, k, vocabulary
                   size), sentence and position counts, the teacher mass its top-k covers; written last
    offsets.npy    int64 (N+1): the rows of sentence ``i`` are ``offsets[i]:offsets[i+1]``, one per target
                   token, EOS included (fairseq's ``sample["target"]`` of that sentence)
    tokens.npy     int32 (P, k): the top-k token ids of each position, most probable first
    logprobs.npy   float16 (P, k): their log-probabilities under the teacher at temperature 1

The arrays are memory-mapped when read. While building, finished shards live in ``shards/`` (a shard is
finished when its record exists; the record is written last), so a killed build resumes; the merge
checks that every shard carries the run's fingerprint and writes the folder's files atomically,
``cache.json`` last. A reader refuses a cache whose fingerprint differs from the teacher and split it
is used with (:meth:`TeacherCache.check`), and one whose sentence lengths differ from the dataset's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from pet_fairseq.core.errors import PetError
from pet_fairseq.core.files import file_digest, file_digest_once, save_npy_atomic, shard_range, write_json_atomic

VERSION = 1
ARRAYS = ("offsets", "tokens", "logprobs")
BUILD_COMMAND = "python -m pet_fairseq.kdcache DATA_BIN --teacher TEACHER.pt --out CACHE"


class TeacherCacheError(PetError, ValueError):
    """A cache that is missing, unfinished or made from another teacher or corpus; the message says how to fix it."""


def split_files(data_bin: Path, split: str, src: str, tgt: str) -> List[Path]:
    """The binarized files of ``split`` (source and target, ``.bin`` and ``.idx``) in a fixed order."""
    return [data_bin / f"{split}.{src}-{tgt}.{lang}.{ext}" for lang in (src, tgt) for ext in ("bin", "idx")]


def fingerprint(teacher: Path, data_bin: Path, split: str, src: str, tgt: str, k: int, vocab: int) -> Dict[str, Any]:
    """What a cache is a function of: the teacher's bytes, the split's bytes, the direction, k and the vocabulary."""
    missing = [p.name for p in split_files(data_bin, split, src, tgt) if not p.is_file()]
    if missing:
        raise TeacherCacheError(f"{data_bin} lacks {', '.join(missing)}: pass the data-bin and --split the cache is for")
    return {"teacher_sha256": file_digest_once(teacher), "split_sha256": file_digest(*split_files(data_bin, split, src, tgt)),
            "split": split, "source_lang": src, "target_lang": tgt, "k": int(k), "vocab": int(vocab)}


def coverage_ks(k: int) -> List[int]:
    """The k' ≤ k at which a cache reports the teacher mass covered: powers of two and k itself."""
    return sorted({2**i for i in range(k.bit_length()) if 2**i <= k} | {k})


# ------------------------------------------------------------------------------------------------------------
# building: shards, then the merge


def shard_stem(work: Path, shard_id: int, num_shards: int) -> Path:
    return work / f"shard-{shard_id:04d}-of-{num_shards:04d}"


def write_shard(work: Path, shard_id: int, num_shards: int, lengths: np.ndarray, tokens: np.ndarray,
                logprobs: np.ndarray, record: Dict[str, Any]) -> None:
    """Write one finished shard (its sentences' lengths and rows in sentence order), then its record."""
    stem = shard_stem(work, shard_id, num_shards)
    if int(lengths.sum()) != len(tokens) or tokens.shape != logprobs.shape:
        raise ValueError(f"shard {shard_id}: {int(lengths.sum())} positions but {tokens.shape}/{logprobs.shape} rows")
    for name, array in (("lengths", lengths.astype(np.int64)), ("tokens", tokens.astype(np.int32)),
                        ("logprobs", logprobs.astype(np.float16))):
        save_npy_atomic(Path(f"{stem}.{name}.npy"), array)
    write_json_atomic(Path(f"{stem}.json"), {**record, "version": VERSION, "sentences": len(lengths)})


def read_record(work: Path, shard_id: int, num_shards: int) -> Optional[Dict[str, Any]]:
    """The record of a finished shard, or ``None`` when the shard is not finished."""
    path = Path(f"{shard_stem(work, shard_id, num_shards)}.json")
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_record(record: Dict[str, Any], expected: Dict[str, Any], work: Path, shard_id: int) -> None:
    """Refuse a shard made from another teacher, split or k."""
    theirs = record.get("fingerprint", {})
    differing = sorted(key for key in set(theirs) | set(expected) if theirs.get(key) != expected.get(key))
    if differing:
        raise TeacherCacheError(
            f"{work} holds shard {shard_id} made with a different {', '.join(differing)}; use the same teacher, "
            f"data and --k, or delete {work} to start over")


def finished_shards(work: Path, num_shards: int, expected: Dict[str, Any]) -> List[int]:
    """Ids of the shards in ``work`` that are finished with this fingerprint."""
    done = []
    for shard_id in range(num_shards):
        record = read_record(work, shard_id, num_shards)
        if record is not None:
            check_record(record, expected, work, shard_id)
            done.append(shard_id)
    return done


def merge(work: Path, out: Path, sentences: int, num_shards: int, expected: Dict[str, Any],
          meta: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Concatenate every finished shard of ``work`` into the cache folder ``out``; returns its ``cache.json``."""
    records, problems = [], []
    for shard_id in range(num_shards):
        record = read_record(work, shard_id, num_shards)
        rows = shard_range(sentences, num_shards, shard_id)
        if record is None:
            problems.append(f"shard {shard_id} is missing")
            continue
        check_record(record, expected, work, shard_id)
        if (record["start"], record["stop"], record["sentences"]) != (rows.start, rows.stop, len(rows)):
            problems.append(f"shard {shard_id} holds {record['sentences']} of sentences {rows.start}-{rows.stop - 1}")
        records.append(record)
    if problems:
        raise TeacherCacheError(f"cannot merge {work}: {'; '.join(problems)}; run the build again without --shard-id "
                                "to compute the missing shards")
    stems = [shard_stem(work, i, num_shards) for i in range(num_shards)]
    lengths = np.concatenate([np.load(f"{s}.lengths.npy") for s in stems])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    out.mkdir(parents=True, exist_ok=True)
    (out / "cache.json").unlink(missing_ok=True)  # the arrays below are replaced: the folder is unfinished until the end
    save_npy_atomic(out / "offsets.npy", offsets)
    for name in ("tokens", "logprobs"):
        save_npy_atomic(out / f"{name}.npy", np.concatenate([np.load(f"{s}.{name}.npy") for s in stems]))
    positions = int(offsets[-1])
    covered = {str(k): sum(r["covered"][str(k)] for r in records) / max(positions, 1) for k in coverage_ks(expected["k"])}
    summary = {"version": VERSION, "fingerprint": expected, "sentences": sentences, "positions": positions,
               "dtype": "float16", "mean_teacher_mass_in_top_k": {k: round(v, 5) for k, v in covered.items()},
               "build_seconds": round(sum(r["seconds"] for r in records), 2), **(meta or {})}
    write_json_atomic(out / "cache.json", summary)
    return summary


# ------------------------------------------------------------------------------------------------------------
# reading


@dataclass
class TeacherCache:
    """A finished cache folder, memory-mapped."""

    path: Path
    meta: Dict[str, Any]
    offsets: np.ndarray
    tokens: np.ndarray
    logprobs: np.ndarray

    @classmethod
    def open(cls, path: Path) -> "TeacherCache":
        path = Path(path)
        if not (path / "cache.json").is_file():
            why = "is unfinished (no cache.json: the build was interrupted)" if path.is_dir() else "does not exist"
            raise TeacherCacheError(f"teacher cache {path} {why}; build it with {BUILD_COMMAND}")
        meta = json.loads((path / "cache.json").read_text(encoding="utf-8"))
        if meta.get("version") != VERSION:
            raise TeacherCacheError(f"teacher cache {path} has format version {meta.get('version')}, this code reads "
                                    f"{VERSION}; rebuild it with {BUILD_COMMAND}")
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
        cache = cls(path, meta, **arrays)
        if len(cache.offsets) != meta["sentences"] + 1 or len(cache.tokens) != meta["positions"]:
            raise TeacherCacheError(f"teacher cache {path}: arrays do not match cache.json; rebuild it")
        return cache

    @property
    def k(self) -> int:
        return int(self.meta["fingerprint"]["k"])

    @property
    def split(self) -> str:
        return str(self.meta["fingerprint"]["split"])

    def check(self, teacher: Path, data_bin: Path, src: str, tgt: str, vocab: int) -> None:
        """Refuse this cache unless it was made from ``teacher`` and this data-bin's split, direction and vocabulary."""
        recorded = self.meta["fingerprint"]
        current = fingerprint(teacher, data_bin, self.split, src, tgt, self.k, vocab)
        names = {"teacher_sha256": f"teacher (--teacher-path {teacher})",
                 "split_sha256": f"corpus ({self.split} split of {data_bin})",
                 "source_lang": "source language", "target_lang": "target language", "vocab": "target dictionary size"}
        differing = [names.get(key, key) for key in recorded if recorded[key] != current.get(key)]
        if differing:
            made = self.meta.get("made_from", {})
            raise TeacherCacheError(
                f"teacher cache {self.path} was made from another {' and another '.join(differing)} "
                f"(made from teacher {made.get('teacher', '?')} on {made.get('data_bin', '?')}); rebuild it for this "
                f"teacher and corpus with {BUILD_COMMAND}, or pass the teacher and data it was made from")

    def check_lengths(self, target_sizes: Sequence[int]) -> None:
        """Refuse a dataset whose target lengths (EOS included) differ from the cache's sentences."""
        lengths = np.diff(self.offsets)
        sizes = np.asarray(target_sizes)
        if len(sizes) != len(lengths) or not np.array_equal(sizes, lengths):
            where = (f"{len(sizes)} sentences, the cache {len(lengths)}" if len(sizes) != len(lengths)
                     else f"sentence {int(np.flatnonzero(sizes != lengths)[0])} differs in length")
            raise TeacherCacheError(f"teacher cache {self.path} does not match the {self.split} split being trained on "
                                    f"({where}); rebuild it with {BUILD_COMMAND}")

    def lookup(self, ids: Tensor, target_mask: Tensor) -> Tuple[Tensor, Tensor]:
        """Top-k ids and log-probabilities (B x T x k) for the sentences ``ids`` of a batch.

        ``target_mask`` (B x T) is True at the non-pad target positions of fairseq's right-padded
        ``sample["target"]``: row ``b`` holds sentence ``ids[b]``'s positions first. Pad positions
        get token 0 and log-probability 0 (callers mask them out).
        """
        index = ids.cpu().numpy().astype(np.int64)
        starts, lengths = self.offsets[index], self.offsets[index + 1] - self.offsets[index]
        # rows of sentence b: starts[b], ..., starts[b] + lengths[b] - 1, sentences one after another
        before = np.cumsum(lengths) - lengths
        rows = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - before, lengths)
        if len(rows) != int(target_mask.sum()):
            raise TeacherCacheError(
                f"teacher cache {self.path}: the batch has {int(target_mask.sum())} target tokens but the cache holds "
                f"{len(rows)} for its sentences; the cache was made from another corpus, rebuild it")
        k = self.k
        tokens = torch.zeros(*target_mask.shape, k, dtype=torch.long, device=target_mask.device)
        logprobs = torch.zeros(*target_mask.shape, k, dtype=torch.float, device=target_mask.device)
        tokens[target_mask] = torch.from_numpy(np.asarray(self.tokens[rows], dtype=np.int64)).to(tokens.device)
        logprobs[target_mask] = torch.from_numpy(np.asarray(self.logprobs[rows], dtype=np.float32)).to(logprobs.device)
        return tokens, logprobs
