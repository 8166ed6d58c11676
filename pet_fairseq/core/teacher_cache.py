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

and, when it was built with hidden states (``--encoder-states``/``--decoder-states``), for the
intermediate-layer loss::

    src_offsets.npy  int64 (N+1): the source rows of sentence ``i``, one per source token, EOS included
    encoder_L.npy    float16 (S, d): the teacher's encoder output after layer L (0 = embeddings) at each source row
    decoder_L.npy    float16 (P, d): the teacher's decoder state after layer L at each target position (rows as
                     ``tokens``), teacher-forced

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
SIDES = ("encoder", "decoder")
BUILD_COMMAND = "python -m pet_fairseq.kdcache DATA_BIN --teacher TEACHER.pt --out CACHE"


class TeacherCacheError(PetError, ValueError):
    """A cache that is missing, unfinished or made from another teacher or corpus; the message says how to fix it."""


def split_files(data_bin: Path, split: str, src: str, tgt: str) -> List[Path]:
    """The binarized files of ``split`` (source and target, ``.bin`` and ``.idx``) in a fixed order."""
    return [data_bin / f"{split}.{src}-{tgt}.{lang}.{ext}" for lang in (src, tgt) for ext in ("bin", "idx")]


def fingerprint(teacher: Path, data_bin: Path, split: str, src: str, tgt: str, k: int, vocab: int,
                states: Optional[Dict[str, List[int]]] = None) -> Dict[str, Any]:
    """What a cache is a function of: the teacher's bytes, the split's bytes, the direction, k and the vocabulary,
    and the teacher layers whose hidden states it holds (``{"encoder": [...], "decoder": [...]}``; only when any)."""
    missing = [p.name for p in split_files(data_bin, split, src, tgt) if not p.is_file()]
    if missing:
        raise TeacherCacheError(f"{data_bin} lacks {', '.join(missing)}: pass the data-bin and --split the cache is for")
    found = {"teacher_sha256": file_digest_once(teacher), "split_sha256": file_digest(*split_files(data_bin, split, src, tgt)),
             "split": split, "source_lang": src, "target_lang": tgt, "k": int(k), "vocab": int(vocab)}
    if states and any(states.values()):
        found["states"] = {side: sorted(int(layer) for layer in states.get(side, [])) for side in SIDES}
    return found


def coverage_ks(k: int) -> List[int]:
    """The k' ≤ k at which a cache reports the teacher mass covered: powers of two and k itself."""
    return sorted({2**i for i in range(k.bit_length()) if 2**i <= k} | {k})


# ------------------------------------------------------------------------------------------------------------
# building: shards, then the merge


def shard_stem(work: Path, shard_id: int, num_shards: int) -> Path:
    return work / f"shard-{shard_id:04d}-of-{num_shards:04d}"


def state_arrays(states: Dict[str, List[int]]) -> List[str]:
    """The array names of the hidden states a cache holds: ``encoder_L`` and ``decoder_L`` per layer L."""
    return [f"{side}_{layer}" for side in SIDES for layer in states.get(side, [])]


def write_shard(work: Path, shard_id: int, num_shards: int, lengths: np.ndarray, tokens: np.ndarray,
                logprobs: np.ndarray, record: Dict[str, Any], states: Optional[Dict[str, np.ndarray]] = None) -> None:
    """Write one finished shard (its sentences' lengths and rows in sentence order), then its record.

    ``states``: ``src_lengths`` (source tokens per sentence) and one array per cached layer
    (:func:`state_arrays`), the encoder's with a row per source token, the decoder's a row per target position.
    """
    stem = shard_stem(work, shard_id, num_shards)
    if int(lengths.sum()) != len(tokens) or tokens.shape != logprobs.shape:
        raise ValueError(f"shard {shard_id}: {int(lengths.sum())} positions but {tokens.shape}/{logprobs.shape} rows")
    arrays = [("lengths", lengths.astype(np.int64)), ("tokens", tokens.astype(np.int32)),
              ("logprobs", logprobs.astype(np.float16))]
    for name, array in sorted((states or {}).items()):
        rows = int(states["src_lengths"].sum()) if name.startswith("encoder_") else len(tokens)
        if name != "src_lengths" and len(array) != rows:
            raise ValueError(f"shard {shard_id}: {name} has {len(array)} rows, expected {rows}")
        arrays.append((name, array.astype(np.int64 if name == "src_lengths" else np.float16)))
    for name, array in arrays:
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
    states = expected.get("states", {})
    if states:
        src_lengths = np.concatenate([np.load(f"{s}.src_lengths.npy") for s in stems])
        src_offsets = np.zeros(len(src_lengths) + 1, dtype=np.int64)
        np.cumsum(src_lengths, out=src_offsets[1:])
        save_npy_atomic(out / "src_offsets.npy", src_offsets)
        for name in state_arrays(states):  # one layer at a time: each is (rows x width) in fp16
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
    src_offsets: Optional[np.ndarray] = None
    state_rows: Optional[Dict[str, np.ndarray]] = None

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
        if cache.states_held:
            cache.src_offsets = np.load(path / "src_offsets.npy", mmap_mode="r")
            cache.state_rows = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in state_arrays(cache.states_held)}
            if len(cache.src_offsets) != meta["sentences"] + 1:
                raise TeacherCacheError(f"teacher cache {path}: src_offsets.npy does not match cache.json; rebuild it")
        return cache

    @property
    def states_held(self) -> Dict[str, List[int]]:
        """The teacher layers whose hidden states the cache holds, ``{"encoder": [...], "decoder": [...]}`` ({} if none)."""
        return dict(self.meta["fingerprint"].get("states", {}))

    def require_states(self, encoder_layers: Sequence[int], decoder_layers: Sequence[int]) -> None:
        """Refuse a cache without the hidden states of these teacher layers (what the layer maps ask for)."""
        held = self.states_held
        missing = [f"{side} layer {layer}" for side, layers in (("encoder", encoder_layers), ("decoder", decoder_layers))
                   for layer in layers if layer not in held.get(side, [])]
        if missing:
            have = ", ".join(f"{side} {','.join(map(str, held[side])) or 'none'}" for side in SIDES if side in held) or "none"
            raise TeacherCacheError(
                f"teacher cache {self.path} holds no hidden states of the teacher's {', '.join(missing)} (it holds: "
                f"{have}), which the intermediate-layer loss (--inter-beta) maps: rebuild it with --encoder-states "
                f"{','.join(map(str, sorted(encoder_layers))) or 'none'} --decoder-states "
                f"{','.join(map(str, sorted(decoder_layers))) or 'none'}, or pass --inter-beta 0")

    def check_source_lengths(self, source_sizes: Sequence[int]) -> None:
        """Refuse a dataset whose source lengths differ from the cached encoder states' sentences."""
        if self.states_held and not np.array_equal(np.asarray(source_sizes), np.diff(self.src_offsets)):
            raise TeacherCacheError(f"teacher cache {self.path}: its encoder states do not match the source side of the "
                                    f"{self.split} split being trained on; rebuild it with {BUILD_COMMAND}")

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
        differing = [names.get(key, key) for key in recorded if key != "states" and recorded[key] != current.get(key)]
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

    @staticmethod
    def _rows(offsets: np.ndarray, index: np.ndarray) -> np.ndarray:
        """The rows of the sentences ``index``, one sentence after another, each in position order."""
        starts, lengths = offsets[index], offsets[index + 1] - offsets[index]
        before = np.cumsum(lengths) - lengths
        return np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - before, lengths)

    def lookup_states(self, ids: Tensor, source_mask: Tensor, target_mask: Tensor, encoder_layers: Sequence[int],
                      decoder_layers: Sequence[int]) -> Tuple[Dict[int, Tensor], Dict[int, Tensor]]:
        """The teacher's hidden states of a batch as the teacher's forward pass gives them: ``{layer: T x B x d}``.

        ``source_mask``/``target_mask`` (B x T) are True at the non-pad positions of fairseq's
        left-padded ``src_tokens`` and right-padded ``target``; a row's non-pad positions hold its
        sentence's tokens in order either way. Pad positions are 0 (the loss masks them out).
        """
        index = ids.cpu().numpy().astype(np.int64)
        found: Tuple[Dict[int, Tensor], Dict[int, Tensor]] = ({}, {})
        for side, layers, offsets, mask, out in (("encoder", encoder_layers, self.src_offsets, source_mask, found[0]),
                                                 ("decoder", decoder_layers, self.offsets, target_mask, found[1])):
            if not layers:
                continue
            rows = self._rows(offsets, index)
            if len(rows) != int(mask.sum()):
                raise TeacherCacheError(f"teacher cache {self.path}: the batch has {int(mask.sum())} {side} positions "
                                        f"but the cache holds {len(rows)} for its sentences; rebuild it")
            for layer in layers:
                cached = self.state_rows[f"{side}_{layer}"]
                states = torch.zeros(*mask.shape, cached.shape[1], dtype=torch.float, device=mask.device)
                states[mask] = torch.from_numpy(np.asarray(cached[rows], dtype=np.float32)).to(mask.device)
                out[layer] = states.transpose(0, 1)
        return found

    def lookup(self, ids: Tensor, target_mask: Tensor) -> Tuple[Tensor, Tensor]:
        """Top-k ids and log-probabilities (B x T x k) for the sentences ``ids`` of a batch.

        ``target_mask`` (B x T) is True at the non-pad target positions of fairseq's right-padded
        ``sample["target"]``: row ``b`` holds sentence ``ids[b]``'s positions first. Pad positions
        get token 0 and log-probability 0 (callers mask them out).
        """
        rows = self._rows(self.offsets, ids.cpu().numpy().astype(np.int64))
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
