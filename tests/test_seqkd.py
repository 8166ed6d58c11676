"""Sequence-level KD corpus: shards, shard records, the merge into a data-bin, and the CLI's checks.

Most tests need no teacher; the CLI tests at the end decode the 7-pair toy data-bin with a randomly
initialised tiny transformer (every hypothesis runs to the length limit: a "weak teacher").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fairseq.data import indexed_dataset

from pet_fairseq.preprocessing.recipe import RECIPE_FILE, read_recipe
from pet_fairseq.seqkd import cli
from pet_fairseq.seqkd.corpus import SeqKDError, finished_shards, load_split, merge, shard_range, shard_stem, write_shard
from pet_fairseq.seqkd.engines import DecodeOptions
from tests.conftest import REPO, make_checkpoint, toy_dictionary

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


def decode_all(split, work, num_shards=3, empty=(), runaway=(), fingerprint=FINGERPRINT):
    """Write every shard with hypotheses [30 + i] (empty for indices in ``empty``)."""
    for s in range(num_shards):
        r = shard_range(len(split), num_shards, s)
        hyps = [[] if i in empty else [30 + i] for i in r]
        record = {"start": r.start, "stop": r.stop, "seconds": 1.0, "tokens": sum(len(h) + 1 for h in hyps),
                  "empty": [i for i in r if i in empty], "runaway": [i for i in r if i in runaway],
                  "fingerprint": fingerprint}
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
    summary = merge(split, work, out, 3, FINGERPRINT, degenerate=policy, max_replaced=0.3)  # 2 of 7 = 28.6 %
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


# -- a corpus that is mostly references is refused -------------------------------------------------------------


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder (``None``) under ``root``: to assert that nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("policy,what", [("reference", "would be replaced by their references"),
                                         ("drop", "would be dropped")])
def test_merge_refuses_a_corpus_above_the_replaced_share_and_keeps_the_shards(split, tmp_path, policy, what):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    fingerprint = {**FINGERPRINT, "max_len_a": 1.2, "max_len_b": 10}
    decode_all(split, work, empty={1}, runaway={4}, fingerprint=fingerprint)
    shards = snapshot(work)
    with pytest.raises(SeqKDError) as refused:
        merge(split, work, out, 3, fingerprint, degenerate=policy)
    message = str(refused.value)
    assert f"2 of 7 hypotheses (28.6 %: 1 empty, 1 at the length limit) {what} (--degenerate {policy})" in message
    assert "more than --max-replaced 0.2 allows" in message
    assert "the teacher is likely undertrained, or the length limit (--max-len-a 1.2, --max-len-b 10) too short" in message
    assert f"accept this corpus with --max-replaced 1 (the decoded shards stay in {work}" in message
    assert "\n" not in message
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))  # no corpus, no seqkd.json
    assert snapshot(work) == shards and finished_shards(work, 3, fingerprint) == [0, 1, 2]
    summary = merge(split, work, out, 3, fingerprint, degenerate=policy, max_replaced=1)  # accepted from the shards
    assert summary["degenerate_share"] == round(2 / 7, 4) and summary["max_replaced"] == 1
    assert json.loads((out / "seqkd.json").read_text())["written"] == (7 if policy == "reference" else 5)


def test_the_share_limit_is_inclusive_and_keep_only_warns(split, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    decode_all(split, work, runaway={0, 3})
    assert merge(split, work, tmp_path / "a", 3, FINGERPRINT, max_replaced=2 / 7)["warning"] is None
    with pytest.raises(SeqKDError, match=r"2 of 7 hypotheses .* more than --max-replaced 0\.28 allows"):
        merge(split, work, tmp_path / "b", 3, FINGERPRINT, max_replaced=0.28)
    summary = merge(split, work, tmp_path / "c", 3, FINGERPRINT, degenerate="keep")
    assert summary["warning"].startswith("warning: 2 of 7 hypotheses (28.6 %: 0 empty, 2 at the length limit) are "
                                         "kept as they are (--degenerate keep): the teacher is likely undertrained")
    assert json.loads((tmp_path / "c" / "seqkd.json").read_text())["warning"] == summary["warning"]


def test_a_refused_corpus_leaves_an_existing_out_as_it_was(split, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    decode_all(split, work, empty={0, 1, 2, 3, 4, 5, 6})
    out.mkdir()
    (out / "seqkd.json").write_text("an earlier corpus")
    with pytest.raises(SeqKDError, match=r"7 of 7 hypotheses \(100\.0 %: 7 empty"):
        merge(split, work, out, 3, FINGERPRINT, force=True)
    assert snapshot(out) == {"seqkd.json": b"an earlier corpus"} and not list(tmp_path.glob(".out.tmp-*"))


# -- the recipe and subword model travel with the corpus -------------------------------------------------------


def write_recipe_file(data_bin: Path, bpe_model: str | None, bpe: str = "subword_nmt") -> Path:
    recipe = {"format": 1, "dataset": "toy", "source_lang": "de", "target_lang": "en", "tokenizer": "moses",
              "moses_aggressive_dash_splits": False, "lowercase": True, "bpe": bpe, "bpe_model": bpe_model}
    path = data_bin / RECIPE_FILE
    path.write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
    return path


def test_the_recipe_and_a_model_inside_the_data_bin_are_copied_byte_for_byte(split, tmp_path):
    work, out, data = tmp_path / "work", tmp_path / "out", split.data_bin
    work.mkdir()
    (data / "spm").mkdir()
    (data / "spm" / "spm.model").write_bytes(b"sentencepiece model bytes")
    recipe = write_recipe_file(data, "spm/spm.model", bpe="sentencepiece")
    before = snapshot(data)
    decode_all(split, work)
    summary = merge(split, work, out, 3, FINGERPRINT)
    assert summary["recipe"] == [RECIPE_FILE, "spm/spm.model"]
    assert (out / RECIPE_FILE).read_bytes() == recipe.read_bytes()
    assert read_recipe(out).bpe_model == out / "spm" / "spm.model"
    assert (out / "spm" / "spm.model").read_bytes() == b"sentencepiece model bytes"
    assert snapshot(data) == before


@pytest.mark.parametrize("absolute", [False, True])
def test_a_model_outside_the_data_bin_is_copied_in_and_the_recipe_names_the_copy(split, tmp_path, absolute):
    work, out, data = tmp_path / "work", tmp_path / "out", split.data_bin
    work.mkdir()
    (tmp_path / "codes").mkdir()
    codes = tmp_path / "codes" / "bpe.code"
    codes.write_text("#version: 0.2\nw 1</w>\n", encoding="utf-8")
    write_recipe_file(data, str(codes) if absolute else "../codes/bpe.code")
    before = snapshot(data)
    decode_all(split, work)
    assert merge(split, work, out, 3, FINGERPRINT)["recipe"] == [RECIPE_FILE, "bpe.code"]
    written = json.loads((out / RECIPE_FILE).read_text())
    assert written["bpe_model"] == "bpe.code" and written["lowercase"] is True and written["dataset"] == "toy"
    assert read_recipe(out).bpe_model == out / "bpe.code" and (out / "bpe.code").read_bytes() == codes.read_bytes()
    assert snapshot(data) == before


def test_a_data_bin_without_recipe_gives_a_corpus_without_one(split, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    decode_all(split, work)
    assert merge(split, work, out, 3, FINGERPRINT)["recipe"] == []
    assert not (out / RECIPE_FILE).exists()


# -- the CLI: options, --out and the recipe are checked before the split is loaded -------------------------------


@pytest.fixture
def refuse_loading(monkeypatch):
    """Make loading the split (or guessing its pair) fail the test: the checks must come first."""
    def boom(*_args, **_kwargs):
        raise AssertionError("the split was loaded before the options were checked")
    monkeypatch.setattr(cli, "load_split", boom)
    monkeypatch.setattr(cli, "infer_pair", boom)


def refused(argv: list[str], capsys) -> str:
    """Run the CLI, assert exit status 2 and a one-line error; return that line."""
    assert cli.main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("extra,message", [
    (["--num-shards", "0"], "--num-shards must be >= 1 (got 0)"),
    (["--num-shards", "3", "--shard-id", "3"], "--shard-id must be in 0..2 for --num-shards 3 (got 3)"),
    (["--shard-id", "-1"], "--shard-id must be in 0..15 for --num-shards 16 (got -1)"),
    (["--beam", "0"], "--beam must be >= 1 (got 0)"),
    (["--batch-size", "0"], "--batch-size must be >= 1 (got 0)"),
    (["--max-tokens", "-5"], "--max-tokens must be >= 1 (got -5)"),
    (["--threads", "-1"], "--threads must be >= 0 (got -1)"),
    (["--max-len-b", "0"], "--max-len-b must be >= 1 (got 0)"),
    (["--max-len-a", "-0.5"], "--max-len-a must be a finite number >= 0 (got -0.5)"),
    (["--max-len-a", "nan"], "--max-len-a must be a finite number >= 0 (got nan)"),
    (["--lenpen", "inf"], "--lenpen must be a finite number (got inf)"),
    (["--max-replaced", "1.5"], "--max-replaced must be a share between 0 and 1 (got 1.5)"),
    (["--max-replaced", "-0.1"], "--max-replaced must be a share between 0 and 1 (got -0.1)"),
    (["--parallel-batches", "0", "--engine", "ctranslate2"], "--parallel-batches must be >= 1 (got 0)"),
    (["--parallel-batches", "2"], "--parallel-batches applies to --engine ctranslate2"),
    (["--engine", "ctranslate2", "--threads", "3", "--parallel-batches", "2"],
     "2 parallel batches cannot share 3 threads evenly"),
    (["--merge-only", "--shard-id", "0"], "--merge-only merges every shard and --shard-id decodes one"),
    (["--device", "tpu"], "--device must be cpu, cuda or cuda:N (got tpu)"),
])
def test_bad_options_are_one_line_before_anything_is_read(split, tmp_path, capsys, refuse_loading, extra, message):
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"not read")
    before = snapshot(tmp_path)
    line = refused([str(split.data_bin), "--teacher", str(teacher), "--out", str(tmp_path / "out"), *extra], capsys)
    assert line == f"error: {message}" or (message in line and line.startswith("error: ")), line
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists() and not (tmp_path / "out.shards").exists()


def test_all_bad_numbers_are_named_at_once(split, tmp_path, capsys, refuse_loading):
    line = refused([str(split.data_bin), "--teacher", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o"),
                    "--beam", "0", "--num-shards", "0", "--batch-size", "-1"], capsys)
    assert line == ("error: --beam must be >= 1 (got 0); --batch-size must be >= 1 (got -1); "
                    "--num-shards must be >= 1 (got 0)")


def test_num_shards_zero_at_the_command_line_is_one_line_not_a_traceback(split, tmp_path):
    """The issue's case, through ``python -m pet_fairseq.seqkd``."""
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"x")
    proc = subprocess.run([sys.executable, "-m", "pet_fairseq.seqkd", str(split.data_bin), "--teacher", str(teacher),
                           "--out", str(tmp_path / "out"), "--num-shards", "0"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "IndexError" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == "error: --num-shards must be >= 1 (got 0)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "teacher.pt"]


def unwritable_folders(tmp_path: Path) -> list[Path]:
    """Folders where this process cannot create anything: a mode-555 folder (not for root), and /sys."""
    folders = []
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        folders.append(locked)
    sys_dir = Path("/sys")
    try:
        sys_dir.joinpath(".seqkd-probe").mkdir()
        sys_dir.joinpath(".seqkd-probe").rmdir()
    except OSError:
        if sys_dir.is_dir():
            folders.append(sys_dir)
    return folders


def test_out_is_checked_first_and_named(split, tmp_path, capsys, refuse_loading):
    teacher, data = tmp_path / "teacher.pt", str(split.data_bin)
    teacher.write_bytes(b"x")
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    before = snapshot(tmp_path)
    base = [data, "--teacher", str(teacher)]
    assert refused(base + ["--out", str(afile / "corpus")], capsys) == \
        f"error: --out {afile / 'corpus'} lies under {afile}, which is a file, not a folder; choose another --out"
    assert refused(base + ["--out", str(afile), "--force"], capsys) == \
        f"error: --out {afile} is a file, not a folder; choose another --out"
    assert refused(base + ["--out", str(tmp_path), "--force"], capsys) == \
        f"error: --out {tmp_path} holds the data-bin ({data}), which replacing --out would delete; choose another --out"
    assert refused(base + ["--out", str(tmp_path / "o"), "--work-dir", str(afile / "w")], capsys) == \
        f"error: --work-dir {afile / 'w'} lies under {afile}, which is a file, not a folder; choose another --work-dir"
    (tmp_path / "o.shards").write_text("a file")
    assert refused(base + ["--out", str(tmp_path / "o")], capsys) == \
        f"error: {tmp_path / 'o.shards'} (the work folder of --out {tmp_path / 'o'}) is a file; move it away or pass --work-dir"
    (tmp_path / "o.shards").unlink()
    folders = unwritable_folders(tmp_path)
    assert folders, "no unwritable folder to test with"
    for folder in folders:
        line = refused(base + ["--out", str(folder / "corpus")], capsys)
        assert line.startswith(f"error: --out {folder / 'corpus'}: cannot create folders in {folder} (")
        assert line.endswith("); choose a writable location for --out")
    for folder in folders:
        if folder.parent == tmp_path:
            folder.chmod(0o755)
            folder.rmdir()
    assert snapshot(tmp_path) == before


def test_a_broken_recipe_is_refused_before_decoding(split, tmp_path, capsys, refuse_loading):
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"x")
    write_recipe_file(split.data_bin, "bpe.code")  # names a codes file that is not there
    line = refused([str(split.data_bin), "--teacher", str(teacher), "--out", str(tmp_path / "out")], capsys)
    assert f"its bpe_model {split.data_bin / 'bpe.code'} does not exist" in line
    assert line.endswith(f"(the seq-KD data-bin inherits {split.data_bin / RECIPE_FILE}: fix or remove it first)")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.shards").exists()


# -- the CLI with a real (untrained) teacher --------------------------------------------------------------------


TINY = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
        "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2"]


@pytest.fixture
def weak_teacher(split, tmp_path) -> Path:
    """An untrained 1+1-layer transformer checkpoint on the toy dictionaries."""
    path, _model, _cfg = make_checkpoint(tmp_path / "teacher.pt", split.data_bin, "transformer", *TINY)
    return path


def test_a_corpus_of_references_is_refused_then_accepted_without_decoding_again(split, weak_teacher, tmp_path,
                                                                                capsys, monkeypatch):
    """A length limit of one token: every hypothesis is empty or at the limit, so all 7 would be references."""
    out = tmp_path / "seqkd"
    argv = [str(split.data_bin), "--teacher", str(weak_teacher), "--out", str(out), "--num-shards", "2",
            "--beam", "2", "--threads", "1", "--max-len-a", "0", "--max-len-b", "1"]
    line = refused(argv, capsys)
    assert line.startswith("error: 7 of 7 hypotheses (100.0 %: ")
    assert ("at the length limit) would be replaced by their references (--degenerate reference), more than "
            "--max-replaced 0.2 allows: the teacher is likely undertrained, or the length limit (--max-len-a 0.0, "
            "--max-len-b 1) too short") in line
    assert line.endswith(f"accept this corpus with --max-replaced 1 (the decoded shards stay in "
                         f"{tmp_path / 'seqkd.shards'}: nothing is decoded again)")
    assert not out.exists()  # no corpus, so no out/seqkd.json for train_pet.sh or the study to reuse
    shards = tmp_path / "seqkd.shards"
    assert sorted(p.name for p in shards.glob("*.json")) == ["shard-0000-of-0002.json", "shard-0001-of-0002.json"]

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("the accepted corpus was decoded again")
    monkeypatch.setattr(cli, "load_teacher_decoder", no_decoding)
    assert cli.main(argv + ["--max-replaced", "1"]) == 0
    summary = json.loads((out / "seqkd.json").read_text())
    assert summary["runaway"] + summary["empty"] == 7 and summary["degenerate_share"] == 1.0
    assert f"{summary['empty']} empty, {summary['runaway']} at the length limit" in line
    assert read_dataset(out / "train.de-en.en") == read_dataset(split.data_bin / "train.de-en.en")  # the references
    assert not shards.exists()


def test_a_work_dir_overlapping_the_data_bin_or_out_is_refused(split, tmp_path, capsys, refuse_loading):
    """The work folder is deleted after the merge, so it may never be, hold or lie inside the data-bin or --out."""
    teacher, data = tmp_path / "teacher.pt", split.data_bin
    teacher.write_bytes(b"x")
    out = tmp_path / "corpus"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "keep.txt").write_text("mine")
    before = snapshot(tmp_path)
    base = [str(data), "--teacher", str(teacher), "--out", str(out), "--force"]
    tail = f"the work folder must be a folder of its own, apart from %s; choose another --work-dir (or leave it " \
           f"out for {out}.shards)"
    cases = [(data, "is the data-bin", "DATA_BIN"), (data / "w", f"lies inside the data-bin {data}", "DATA_BIN"),
             (tmp_path, f"holds the data-bin {data}", "DATA_BIN"), (out, "is --out", "--out"),
             (out / "sub", f"lies inside --out {out}", "--out")]
    for work, relation, flag in cases:
        assert refused(base + ["--work-dir", str(work)], capsys) == \
            f"error: --work-dir {work} {relation}: " + tail % flag
    (tmp_path / "models").mkdir()
    teacher.rename(tmp_path / "models" / "teacher.pt")
    teacher = tmp_path / "models" / "teacher.pt"
    assert refused([str(data), "--teacher", str(teacher), "--out", str(tmp_path / "o"), "--work-dir",
                    str(tmp_path / "models")], capsys) == \
        f"error: --work-dir {tmp_path / 'models'} holds the teacher ({teacher}); choose another --work-dir " \
        f"(or leave it out for {tmp_path / 'o'}.shards)"
    teacher.rename(tmp_path / "teacher.pt")
    (tmp_path / "models").rmdir()
    assert snapshot(tmp_path) == before


def test_an_existing_work_dir_keeps_its_files_and_only_the_shards_go(split, weak_teacher, tmp_path):
    """A --work-dir the run did not create is kept after the merge; only the shards it wrote are deleted."""
    mine = tmp_path / "userfolder"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    before = snapshot(mine)
    argv = [str(split.data_bin), "--teacher", str(weak_teacher), "--out", str(tmp_path / "corpus"), "--num-shards",
            "2", "--beam", "1", "--threads", "1", "--max-replaced", "1", "--work-dir", str(mine)]
    assert cli.main(argv) == 0
    assert (tmp_path / "corpus" / "seqkd.json").is_file()
    assert snapshot(mine) == before  # notes.txt untouched, no shard left behind
    created = tmp_path / "fresh"  # a --work-dir the run creates is its own, and goes after the merge
    assert cli.main(argv[:-1] + [str(created), "--out", str(tmp_path / "corpus2")]) == 0
    assert not created.exists() and (tmp_path / "corpus2" / "seqkd.json").is_file()


@pytest.fixture
def bpe_data_bin(split, tmp_path) -> Path:
    """The toy data-bin with a recipe and real subword-nmt codes (learned on its own words), as data_prep leaves it."""
    from pet_fairseq.preprocessing.bpe import learn_subword_nmt

    text = tmp_path / "text.txt"
    text.write_text("".join(f"w{i} w{i + 1} w{i + 2}\n" for i in range(30)), encoding="utf-8")
    learn_subword_nmt([text], split.data_bin / "bpe.code", 60)
    write_recipe_file(split.data_bin, "bpe.code")
    return split.data_bin


def test_a_student_trained_on_the_corpus_translates_with_no_extra_flags(bpe_data_bin, weak_teacher, tmp_path, capsys):
    out = tmp_path / "seqkd"
    assert cli.main([str(bpe_data_bin), "--teacher", str(weak_teacher), "--out", str(out), "--num-shards", "1",
                     "--beam", "1", "--threads", "1", "--degenerate", "keep"]) == 0
    assert "recipe: preprocessing.json, bpe.code" in capsys.readouterr().err
    assert (out / "bpe.code").read_bytes() == (bpe_data_bin / "bpe.code").read_bytes()
    student, _model, _cfg = make_checkpoint(tmp_path / "student.pt", out, "transformer", *TINY, seed=1)
    # the original data-bin is gone: everything the student needs must be in the seq-KD data-bin
    bpe_data_bin.rename(tmp_path / "elsewhere")
    source = tmp_path / "input.de"
    source.write_text("w1 w2 w3\nW4 w5\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "pet_fairseq.translate", str(student), str(source),
                           "--max-len-b", "5"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout.splitlines()) == 2 and f"{student}: de->en" in proc.stderr
