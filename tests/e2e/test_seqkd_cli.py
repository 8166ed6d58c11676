"""``python -m pet_fairseq.seqkd`` on real Multi30k data with a trained teacher, against fairseq-generate."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fairseq.data import Dictionary, data_utils

from tests.e2e.conftest import USER_DIR, fairseq, run

pytestmark = pytest.mark.e2e

DECODE = ["--beam", "4", "--max-len-a", "1.2", "--max-len-b", "10"]


def seqkd(data, teacher, out, *extra: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pet_fairseq.seqkd", str(data), "--teacher", str(teacher), "--out", str(out),
                "--split", "test", "--threads", "1", *DECODE, *extra])


def targets(data_bin, split: str = "test") -> list[str]:
    d = Dictionary.load(str(data_bin / "dict.en.txt"))
    ds = data_utils.load_indexed_dataset(str(data_bin / f"{split}.de-en.en"), d)
    return [d.string(ds[i]) for i in range(len(ds))]


def generate_hypotheses(data, teacher) -> list[str]:
    """fairseq-generate's hypotheses (BPE kept) of the test split, in sentence-id order."""
    out = run([fairseq("generate"), str(data), "--user-dir", USER_DIR, "--path", str(teacher), "--gen-subset", "test",
               "--source-lang", "de", "--target-lang", "en", "--cpu", "--batch-size", "128", *DECODE]).stdout
    hyps = {}
    for line in out.splitlines():
        if line.startswith("H-"):
            head, _score, text = line.split("\t")
            hyps[int(head[2:])] = text
    return [hyps[i] for i in range(len(hyps))]


@pytest.fixture(scope="module")
def straight(multi30k_bin, tiny_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("seqkd") / "straight"
    proc = seqkd(multi30k_bin, tiny_teacher, out, "--num-shards", "3", "--degenerate", "keep")
    return out, proc


def test_distilled_corpus_keeps_dictionaries_sources_and_line_count(multi30k_bin, straight):
    out, proc = straight
    for name in ("dict.de.txt", "dict.en.txt", "test.de-en.de.bin", "test.de-en.de.idx", "train.de-en.en.bin",
                 "valid.de-en.en.idx"):
        assert (out / name).read_bytes() == (multi30k_bin / name).read_bytes(), name
    assert len(targets(out)) == len(targets(multi30k_bin)) == 100
    assert targets(out) != targets(multi30k_bin)
    summary = json.loads((out / "seqkd.json").read_text())
    assert summary["sentences"] == summary["written"] == 100 and summary["tokens_per_second"] > 0
    assert "seq-KD corpus: 100 of 100 test pairs" in proc.stderr
    assert not (out.parent / "straight.shards").exists()


def test_targets_are_what_fairseq_generate_decodes(multi30k_bin, tiny_teacher, straight):
    assert targets(straight[0]) == generate_hypotheses(multi30k_bin, tiny_teacher)


def test_interrupted_run_resumes_to_identical_files(multi30k_bin, tiny_teacher, straight, tmp_path):
    out = tmp_path / "resumed"
    seqkd(multi30k_bin, tiny_teacher, out, "--num-shards", "3", "--shard-id", "1", "--degenerate", "keep")
    assert not out.exists() and (tmp_path / "resumed.shards" / "shard-0001-of-0003.json").is_file()
    # a shard killed mid-write leaves files without a record: it is decoded again
    (tmp_path / "resumed.shards" / "shard-0002-of-0003.bin").write_bytes(b"partial")
    proc = seqkd(multi30k_bin, tiny_teacher, out, "--num-shards", "3", "--degenerate", "keep")
    assert "1 of 3 shards already finished" in proc.stderr
    for path in straight[0].iterdir():
        if path.suffix in (".bin", ".idx"):
            assert (out / path.name).read_bytes() == path.read_bytes(), path.name


def test_two_processes_split_the_shards_and_merge_exactly(multi30k_bin, tiny_teacher, straight, tmp_path):
    out = tmp_path / "parallel"
    base = [sys.executable, "-m", "pet_fairseq.seqkd", str(multi30k_bin), "--teacher", str(tiny_teacher), "--out",
            str(out), "--split", "test", "--threads", "1", "--num-shards", "3", "--degenerate", "keep", *DECODE]
    procs = [subprocess.Popen(base + ["--shard-id", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    failed = subprocess.run(base + ["--merge-only"], capture_output=True, text=True)
    assert failed.returncode == 2 and "shard 1 is missing" in failed.stderr
    run(base + ["--shard-id", "1"])
    run(base + ["--merge-only"])
    assert targets(out) == targets(straight[0])


def test_ctranslate2_float32_engine_agrees_with_fairseq(multi30k_bin, tiny_teacher, straight, tmp_path):
    pytest.importorskip("ctranslate2")
    out = tmp_path / "ct2"
    seqkd(multi30k_bin, tiny_teacher, out, "--num-shards", "3", "--degenerate", "keep", "--engine", "ctranslate2")
    ours, reference = targets(out), targets(straight[0])
    same = sum(a == b for a, b in zip(ours, reference))
    assert len(ours) == 100 and same >= 95, f"only {same}/100 hypotheses equal fairseq's"
    in_parts = tmp_path / "ct2-parallel"
    seqkd(multi30k_bin, tiny_teacher, in_parts, "--num-shards", "3", "--degenerate", "keep", "--engine", "ctranslate2",
          "--threads", "2", "--parallel-batches", "2")
    assert targets(in_parts) == ours  # two half-batches side by side: the same corpus


def test_bad_inputs_fail_with_a_clear_message(multi30k_bin, tiny_teacher, tmp_path):
    base = [sys.executable, "-m", "pet_fairseq.seqkd", str(multi30k_bin), "--out", str(tmp_path / "x")]
    cases = [
        (["--teacher", str(tmp_path / "nope.pt")], "does not exist"),
        (["--teacher", str(tiny_teacher), "--split", "dev"], "lacks dev.de-en.de.bin"),
        (["--teacher", str(tiny_teacher), "--shard-id", "5", "--num-shards", "2"], "--shard-id must be in 0..1"),
        (["--teacher", str(tiny_teacher), "--engine", "fairseq", "--parallel-batches", "2"],
         "--parallel-batches applies to --engine ctranslate2"),
        (["--teacher", str(tiny_teacher), "--engine", "ctranslate2", "--threads", "2", "--parallel-batches", "3"],
         "3 parallel batches cannot share 2 threads evenly"),
    ]
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    cases += [  # checked before the split is loaded, one line each, naming the option
        (["--teacher", str(tiny_teacher), "--num-shards", "0"], "error: --num-shards must be >= 1 (got 0)"),
        (["--teacher", str(tiny_teacher), "--beam", "0", "--max-tokens", "0"],
         "error: --beam must be >= 1 (got 0); --max-tokens must be >= 1 (got 0)"),
        (["--teacher", str(tiny_teacher), "--out", str(notes / "x")],
         f"error: --out {notes / 'x'} lies under {notes}, which is a file, not a folder; choose another --out"),
    ]
    for extra, message in cases:
        proc = subprocess.run(base + extra, capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr, (extra, proc.stderr[-500:])
        assert "Traceback" not in proc.stderr and ".shards" not in proc.stderr, (extra, proc.stderr[-500:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"] and notes.read_text() == "mine"
    same = subprocess.run([sys.executable, "-m", "pet_fairseq.seqkd", str(multi30k_bin), "--teacher", str(tiny_teacher),
                           "--out", str(multi30k_bin)], capture_output=True, text=True)
    assert same.returncode == 2 and "never overwrites its source" in same.stderr
