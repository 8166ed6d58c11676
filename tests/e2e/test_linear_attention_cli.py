"""A linear-attention student distilled from a softmax teacher with the real CLIs, decoded and benchmarked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.e2e.conftest import USER_DIR, fairseq, run, train_losses

pytestmark = pytest.mark.e2e

TEACHER = ["--arch", "transformer", "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "64",
           "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
           "--share-all-embeddings"]
STUDENT = ["--arch", "pet_transformer", "--encoder-layer-plan", "0,1,0~,1~", "--decoder-layer-plan", "0,1,0~,1~",
           "--encoder-embed-dim", "48", "--decoder-embed-dim", "48", "--encoder-ffn-embed-dim", "96",
           "--decoder-ffn-embed-dim", "96", "--share-all-embeddings",
           "--encoder-self-attention", "linear", "--decoder-self-attention", "linear"]
OPTIM = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "10", "--max-tokens", "2000", "--cpu", "--seed", "3", "--log-format", "json",
         "--log-interval", "5", "--no-epoch-checkpoints", "--num-workers", "0"]


@pytest.fixture(scope="module")
def teacher(multi30k_bin, tmp_path_factory) -> Path:
    """30 updates of a small softmax transformer (as the pruning e2e test builds its teacher)."""
    save = tmp_path_factory.mktemp("linear_teacher")
    run([fairseq("train"), str(multi30k_bin), *TEACHER, *OPTIM, "--criterion", "label_smoothed_cross_entropy",
         "--label-smoothing", "0.1", "--max-update", "30", "--save-dir", str(save), "--disable-validation"])
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="module")
def student(multi30k_bin, teacher, tmp_path_factory):
    """40 pet_kd updates of a pet_transformer with linear self-attention on both sides."""
    save = tmp_path_factory.mktemp("linear_student")
    proc = run([fairseq("train"), str(multi30k_bin), "--user-dir", USER_DIR, "--task", "pet_distillation",
                "--teacher-path", str(teacher), "--criterion", "pet_kd", "--encoder-layer-map", "1:2,2:4",
                "--decoder-layer-map", "1:2,2:4", *STUDENT, *OPTIM, "--max-update", "40", "--save-dir", str(save),
                "--disable-validation"])
    return save / "checkpoint_last.pt", proc.stdout + proc.stderr


def test_kd_trains_a_linear_student_and_generate_decodes_it(student, multi30k_bin):
    checkpoint, log = student
    assert "LinearMultiheadAttention" in log  # the model printout: the option reached the model
    losses = train_losses(log)
    assert len(losses) >= 6 and losses[-1] < losses[0], losses
    stats = [json.loads(line.split("| train_inner | ", 1)[1]) for line in log.splitlines() if "| train_inner | " in line]
    assert all(k in stats[0] for k in ("kd_loss", "inter_loss", "nll_loss"))
    cfg = torch.load(checkpoint, map_location="cpu", weights_only=False)["cfg"]["model"]
    assert (cfg.encoder_self_attention, cfg.decoder_self_attention) == ("linear", "linear")
    gen = run([fairseq("generate"), str(multi30k_bin), "--user-dir", USER_DIR, "--path", str(checkpoint),
               "--gen-subset", "test", "--beam", "5", "--batch-size", "64", "--max-len-a", "1.2", "--max-len-b", "10",
               "--cpu"])
    assert sum(line.startswith("H-") for line in gen.stdout.splitlines()) == 100


def test_length_benchmark_cli_prints_side_by_side_table(student, teacher, multi30k_bin, tmp_path):
    out = tmp_path / "lengths.json"
    proc = run(["bash", str(REPO / "scripts" / "benchmark_lengths.sh"), "--data-bin", str(multi30k_bin),
                "--labels", "softmax,linear", "--lengths", "10,30", "--inputs", "2", "--batch-size", "2", "--beam", "2",
                "--repeats", "2", "--threads", "1", "--json", str(out), str(teacher), str(student[0])])
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith("| source")]
    assert len(rows) == 4
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [(c[0], c[1]) for c in cells] == [("10", "softmax"), ("10", "linear"), ("30", "softmax"), ("30", "linear")]
    assert cells[0][5] == cells[2][5] == "1.00"  # ratios are to the first model at each length
    assert [c[2] for c in cells] == ["10.0", "10.0", "30.0", "30.0"]  # output length forced to the source length
    report = json.loads(out.read_text())
    assert report["reference"] == "softmax" and len(report["results"]) == 4
    assert all(len(r["seconds"]) == 2 and r["sentences"] == 2 for r in report["results"])
    assert "decode:" in proc.stderr  # tqdm progress


def test_length_benchmark_reports_a_missing_subset(teacher, multi30k_bin):
    proc = subprocess.run([sys.executable, "-m", "pet_fairseq.evaluation.length_benchmark", "--data-bin",
                           str(multi30k_bin), "--subset", "nosuch", str(teacher)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "subset 'nosuch' (de-en) not found" in proc.stderr
