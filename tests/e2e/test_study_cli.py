"""``python -m pet_fairseq.study`` end to end on real Multi30k: corpus, two variants, table, curves, cache."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from tests.e2e.conftest import run

pytestmark = pytest.mark.e2e

SPEC = {
    "budget": 12, "curve_points": 2,
    "common_args": "--optimizer adam --adam-betas '(0.9, 0.98)' --lr 2e-3 --lr-scheduler inverse_sqrt --warmup-updates 5 "
                   "--max-tokens 2000 --cpu --num-workers 0",
    "students": {"pet": "--arch pet_transformer --encoder-layer-plan 0,0~ --decoder-layer-plan 0,0~ --encoder-embed-dim 32 "
                        "--decoder-embed-dim 32 --encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 "
                        "--encoder-attention-heads 2 --decoder-attention-heads 2 --share-all-embeddings"},
    "corpora": {"greedy": {"engine": "ctranslate2", "beam": 1, "args": "--threads 1 --max-replaced 1"}},
    "variants": [
        {"name": "ce", "label": "no KD", "student": "pet", "criterion": "ce"},
        {"name": "seqkd-kd", "label": "seq-KD + word KD", "student": "pet", "criterion": "kd", "corpus": "greedy",
         "args": "--kd-alpha 0.5 --kd-temperature 1 --inter-beta 0"},
    ],
}


def study(spec_path, data, teacher, out):
    return run([sys.executable, "-m", "pet_fairseq.study", "--spec", str(spec_path), "--data-bin", str(data),
                "--teacher", str(teacher), "--out", str(out), "--source-lang", "de", "--target-lang", "en",
                "--bpe", "none", "--jobs", "2", "--threads", "1",
                "--eval-args", "--subset test --beam 2 --batch-size 50 --repeats 1 --max-sentences 50"], timeout=1500)


def test_study_trains_every_variant_once_and_prints_one_table(multi30k_bin, tiny_teacher, tmp_path):
    pytest.importorskip("ctranslate2")
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(SPEC))
    out = tmp_path / "study"
    first = study(spec_path, multi30k_bin, tiny_teacher, out)
    table = (out / "study.md").read_text()
    assert "| teacher |" in table and "| no KD | 1 |" in table and "| seq-KD + word KD | 1 |" in table
    rows = {r["variant"]["name"]: r for r in json.loads((out / "study.json").read_text())["rows"]}
    assert set(rows) == {"ce", "seqkd-kd"} and all(r["bleu"] is not None and r["valid_nll"] > 0 for r in rows.values())
    assert rows["ce"]["unique_parameters"] == rows["seqkd-kd"]["unique_parameters"]
    assert (out / "curves.png").stat().st_size > 10_000
    kd_log = (out / "runs" / "seqkd-kd" / "train.log").read_text()
    assert str(out / "corpora" / "greedy") in kd_log and "valid on 'valid' subset" in kd_log
    assert "kd_loss" in kd_log and "num_updates 12" in kd_log
    assert "seqkd-kd: started" in first.stderr

    mtime = (out / "runs" / "ce" / "checkpoint_last.pt").stat().st_mtime
    again = study(spec_path, multi30k_bin, tiny_teacher, out)  # everything cached: nothing retrained
    assert "started" not in again.stderr and (out / "runs" / "ce" / "checkpoint_last.pt").stat().st_mtime == mtime
    assert (out / "study.md").read_text() == table

    edited_spec = copy.deepcopy(SPEC)
    edited_spec["variants"][0]["args"] = "--dropout 0.3"  # an edited variant is not silently reused
    spec_path.write_text(json.dumps(edited_spec))
    edited = subprocess.run([sys.executable, "-m", "pet_fairseq.study", "--spec", str(spec_path), "--data-bin",
                             str(multi30k_bin), "--teacher", str(tiny_teacher), "--out", str(out), "--source-lang", "de",
                             "--target-lang", "en", "--bpe", "none"], capture_output=True, text=True)
    assert edited.returncode == 2 and "ce was run with other options (differing: " in edited.stderr and "--dropout 0.3" in edited.stderr
