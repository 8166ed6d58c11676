"""Prune a teacher trained on real data with the real CLI, decode it with fairseq-generate, then KD-fine-tune it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from tests.e2e.conftest import USER_DIR, fairseq, run, train_losses

pytestmark = pytest.mark.e2e

ARCH = ["--arch", "transformer", "--encoder-embed-dim", "64", "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim",
        "128", "--decoder-ffn-embed-dim", "128", "--share-all-embeddings"]
OPTIM = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "10", "--max-tokens", "2000", "--cpu", "--seed", "3", "--log-format", "json", "--log-interval", "1"]


@pytest.fixture(scope="module")
def teacher(multi30k_bin, tmp_path_factory):
    save = tmp_path_factory.mktemp("prune_teacher")
    run([fairseq("train"), str(multi30k_bin), *ARCH, "--encoder-layers", "3", "--decoder-layers", "3", *OPTIM,
         "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-update", "30",
         "--save-dir", str(save), "--no-epoch-checkpoints"])
    return save / "checkpoint_last.pt"


def test_prune_generate_then_distil(multi30k_bin, teacher, tmp_path):
    out = tmp_path / "pruned"
    proc = run(["bash", str(REPO / "scripts" / "prune_layers.sh"), str(multi30k_bin), "--path", str(teacher),
                "--out-dir", str(out), "--target-encoder-layers", "2", "--target-decoder-layers", "2",
                "--strategy", "compare", "--max-sentences", "64", "--cpu"])
    log = json.loads((out / "pruning_log.json").read_text())
    greedy, top = log["runs"]["greedy"], log["runs"]["top"]
    # joint: all 3+3 depths compete, then the 3 of the side that has not reached its target yet
    assert [len(s["candidates"]) for s in greedy["steps"]] == [6, 3]
    assert {s["removed_side"] for s in greedy["steps"]} == {"encoder", "decoder"}
    assert [len(s["candidates"]) for s in top["steps"]] == [1, 1]
    assert [(s["removed_side"], s["removed_depth"]) for s in top["steps"]] == [("encoder", 2), ("decoder", 2)]
    assert greedy["finished"] and top["finished"]
    assert greedy["verified_score"] == pytest.approx(greedy["steps"][-1]["score"], abs=1e-3)
    # every greedy step removed the candidate with the lowest validation loss
    for step in greedy["steps"]:
        assert step["score"] == min(c["score"] for c in step["candidates"])
    assert "| removed |" in proc.stdout and (out / "comparison.md").is_file()
    assert "step 1: 6 candidate(s)" in proc.stderr  # the per-step table is logged

    pruned = out / "greedy" / "checkpoint_pruned.pt"
    state = torch.load(pruned, map_location="cpu", weights_only=False)
    assert (state["cfg"]["model"].encoder_layers, state["cfg"]["model"].decoder_layers) == (2, 2)
    assert state.get("last_optimizer_state") is None
    assert {k.split(".")[2] for k in state["model"] if k.startswith("encoder.layers.")} == {"0", "1"}

    hidden = teacher.with_name("elsewhere.pt")
    teacher.rename(hidden)  # fairseq-generate must not need the original
    try:
        gen = run([fairseq("generate"), str(multi30k_bin), "--user-dir", USER_DIR, "--path", str(pruned),
                   "--gen-subset", "test", "--beam", "3", "--batch-size", "64", "--cpu"])
    finally:
        hidden.rename(teacher)
    assert sum(line.startswith("H-") for line in gen.stdout.splitlines()) == 100

    hint = greedy["finetune"]
    assert hint["architecture_flags"] == ["--encoder-layers", "2", "--decoder-layers", "2"]
    kd = run([fairseq("train"), str(multi30k_bin), "--user-dir", USER_DIR, "--task", "pet_distillation",
              "--teacher-path", str(teacher), "--criterion", "pet_kd", "--finetune-from-model", str(pruned), *ARCH,
              *hint["architecture_flags"], "--encoder-layer-map", hint["encoder_layer_map"],
              "--decoder-layer-map", hint["decoder_layer_map"], *OPTIM, "--max-update", "3",
              "--save-dir", str(tmp_path / "kd"), "--no-epoch-checkpoints", "--no-save"])
    log_text = kd.stdout + kd.stderr
    assert f"loading pretrained model from {pruned}" in log_text
    assert len(train_losses(log_text)) == 3


def test_interrupted_run_resumes(multi30k_bin, teacher, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pet_fairseq.pruning", str(multi30k_bin), "--path", str(teacher), "--out-dir", str(out),
           "--target-decoder-layers", "1", "--strategy", "top", "--max-sentences", "32", "--cpu", "--no-verify"]
    run(cmd, cwd=REPO)
    log_path = out / "pruning_log.json"
    log = json.loads(log_path.read_text())
    assert [s["decoder_layers"] for s in log["runs"]["top"]["steps"]] == [2, 1]
    # as if interrupted after step 1: the log holds one step (and the checkpoint of that step)
    log["runs"]["top"]["steps"] = log["runs"]["top"]["steps"][:1]
    log["runs"]["top"]["finished"] = False
    log_path.write_text(json.dumps(log))

    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 2 and "pass --resume" in again.stderr
    other = subprocess.run(cmd[:-1] + ["--max-sentences", "16", "--resume"], cwd=REPO, capture_output=True, text=True)
    assert other.returncode == 2 and "other settings (max_sentences)" in other.stderr
    resumed = run(cmd + ["--resume"], cwd=REPO)
    assert "step 2:" in resumed.stderr and "step 1:" not in resumed.stderr
    log = json.loads(log_path.read_text())
    assert [s["decoder_layers"] for s in log["runs"]["top"]["steps"]] == [2, 1] and log["runs"]["top"]["finished"]
    state = torch.load(out / "top" / "checkpoint_pruned.pt", map_location="cpu", weights_only=False)
    assert state["cfg"]["model"].decoder_layers == 1
