"""Sequence-level KD corpus: shards, shard records, and the merge into a data-bin (no teacher needed)."""

from __future__ import annotations

import json

import pytest
import torch
from fairseq.data import indexed_dataset

from pet_fairseq.seqkd.corpus import (
    SeqKDError, finished_shards, load_split, merge, shard_range, shard_stem, write_shard,
)
from pet_fairseq.seqkd.engines import DecodeOptions
from tests.conftest import toy_dictionary

FINGERPRINT = {"teacher_sha256": "t", "beam": 5, "num_shards": 3}


def write_dataset(prefix, rows) -> None:
    builder = indexed_dataset.make_builder(str(prefix) + ".bin", impl="mmap", vocab_size=100)
    for row in rows:
        builder.add_item(torch.tensor(row, dtype=torch.int64))
    builder.finalize(str(prefix) + ".idx")


def read_dataset(prefix) -> list[list[int]]:
    data = indexed_dataset.MMapIndexedDataset(str(prefix))
    return [data[i].tolist() for i in range(len(data))]


@pytest.fixture
def split(tmp_path):
    """A 7-pair de-en data-bin: train (replaced), valid (copied), dictionaries."""
    d = toy_dictionary(40)
    data = tmp_path / "bin"
    data.mkdir()
    for lang in ("de", "en"):
        d.save(str(data / f"dict.{lang}.txt"))
    eos = d.eos()
    write_dataset(data / "train.de-en.de", [[10 + i, 11, eos] for i in range(7)])
    write_dataset(data / "train.de-en.en", [[20 + i, eos] for i in range(7)])
    write_dataset(data / "valid.de-en.de", [[5, eos]])
    write_dataset(data / "valid.de-en.en", [[6, eos]])
    return load_split(data, "train", "de", "en")


def decode_all(split, work, num_shards=3, empty=(), runaway=()):
    """Write every shard with hypotheses [30 + i] (empty for indices in ``empty``)."""
    for s in range(num_shards):
        r = shard_range(len(split), num_shards, s)
        hyps = [[] if i in empty else [30 + i] for i in r]
        record = {"start": r.start, "stop": r.stop, "seconds": 1.0, "tokens": sum(len(h) + 1 for h in hyps),
                  "empty": [i for i in r if i in empty], "runaway": [i for i in r if i in runaway],
                  "fingerprint": FINGERPRINT}
        write_shard(work, s, num_shards, hyps, split.tgt_dict.eos(), len(split.tgt_dict), record)


@pytest.mark.parametrize("size,shards", [(7, 3), (10, 4), (3, 3), (2, 5)])
def test_shards_tile_the_split_contiguously(size, shards):
    ranges = [shard_range(size, shards, s) for s in range(shards)]
    assert [i for r in ranges for i in r] == list(range(size))
    assert max(map(len, ranges)) - min(map(len, ranges)) <= 1


def test_shard_id_out_of_range_is_an_error():
    with pytest.raises(SeqKDError, match="--shard-id must be in 0..2"):
        shard_range(10, 3, 3)


def test_merge_replaces_targets_and_copies_everything_else(split, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    decode_all(split, work)
    summary = merge(split, work, out, 3, FINGERPRINT)
    eos = split.tgt_dict.eos()
    assert read_dataset(out / "train.de-en.en") == [[30 + i, eos] for i in range(7)]
    assert read_dataset(out / "train.de-en.de") == read_dataset(split.data_bin / "train.de-en.de")
    for name in ("dict.de.txt", "dict.en.txt", "valid.de-en.de.bin", "valid.de-en.en.idx"):
        assert (out / name).read_bytes() == (split.data_bin / name).read_bytes()
    assert summary["sentences"] == summary["written"] == 7
    assert summary["hypothesis_tokens"] == 14 and summary["decode_seconds"] == 3.0
    assert json.loads((out / "seqkd.json").read_text())["fingerprint"] == FINGERPRINT
    assert not list(tmp_path.glob(".out.tmp-*"))


@pytest.mark.parametrize("policy", ["reference", "keep", "drop"])
def test_degenerate_hypotheses_follow_the_policy(split, tmp_path, policy):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    decode_all(split, work, empty={1}, runaway={4})
    summary = merge(split, work, out, 3, FINGERPRINT, degenerate=policy)
    eos = split.tgt_dict.eos()
    targets, sources = read_dataset(out / "train.de-en.en"), read_dataset(out / "train.de-en.de")
    assert (summary["empty"], summary["runaway"]) == (1, 1)
    if policy == "reference":
        assert targets[1] == [21, eos] and targets[4] == [24, eos] and targets[2] == [32, eos]
    elif policy == "keep":
        assert targets[1] == [eos] and targets[4] == [34, eos]
    else:
        assert len(targets) == len(sources) == 5 == summary["written"]
        assert [s[0] for s in sources] == [10, 12, 13, 15, 16]
        assert targets == [[30 + i, eos] for i in (0, 2, 3, 5, 6)]


def test_merge_names_missing_shards(split, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    decode_all(split, work)
    for ext in (".json",):
        shard_stem(work, 1, 3).with_suffix(ext).unlink()
    with pytest.raises(SeqKDError, match="shard 1 is missing"):
        merge(split, work, tmp_path / "out", 3, FINGERPRINT)
    assert not (tmp_path / "out").exists()


def test_shards_of_other_options_are_refused(split, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    decode_all(split, work)
    other = {**FINGERPRINT, "beam": 1}
    with pytest.raises(SeqKDError, match=r"different beam \(beam: 5 there, 1 now\)"):
        finished_shards(work, 3, other)
    assert finished_shards(work, 3, FINGERPRINT) == [0, 1, 2]


def test_existing_output_is_not_overwritten_without_force(split, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    decode_all(split, work)
    with pytest.raises(SeqKDError, match="pass --force"):
        merge(split, work, out, 3, FINGERPRINT)
    assert (out / "keep.txt").read_text() == "mine"
    merge(split, work, out, 3, FINGERPRINT, force=True)
    assert not (out / "keep.txt").exists() and (out / "train.de-en.en.bin").is_file()


def test_missing_split_names_the_files_and_the_splits_present(split):
    with pytest.raises(SeqKDError, match=r"lacks test.de-en.de.bin.*splits present: train, valid"):
        load_split(split.data_bin, "test", "de", "en")


def test_length_limit_is_fairseqs_per_batch_limit():
    options = DecodeOptions(beam=5, max_len_a=1.2, max_len_b=10)
    assert options.limit([3, 9]) == int(1.2 * 10 + 10)  # longest source + EOS
    with pytest.raises(SeqKDError, match="--beam >= 1"):
        DecodeOptions(beam=0)
