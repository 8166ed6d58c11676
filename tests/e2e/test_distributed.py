"""pet_kd and pet_warmup as one data-parallel job of 2 CPU processes (gloo), with torchrun and fairseq's launcher.

Every run goes through :mod:`tests.e2e.ddp_probe` (``fairseq-train`` plus a per-rank record of
each update's gradients, the final weights and the batches). Why a 2-process run can be compared
exactly with a 1-process run with ``--update-freq 2``: fairseq builds the same list of batches in
every process and gives rank r the batches r, r+2, r+4, ...; one process with ``--update-freq 2``
groups the batches (0, 1), (2, 3), ... into its updates. So update k sees the same two batches
either way, and fairseq scales the summed gradients by the summed sample sizes in both cases.
Dropout is off, so nothing else depends on the process. With one thread per process the
gradients came out bitwise identical on the development machine; the comparison allows 1e-6 for
other BLAS builds. The ranks of one job must agree exactly (that is what synchronisation means).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, VENV_BIN
from tests.e2e.conftest import USER_DIR, run, train_losses

pytestmark = pytest.mark.e2e

#: 1-process vs 2-process tolerance on gradients and weights (observed: 0, bitwise equal)
TOLERANCE = 1e-6
UPDATES = 4
STUDENT = ["--arch", "pet_iwslt_de_en", "--encoder-embed-dim", "48", "--decoder-embed-dim", "32",
           "--encoder-ffn-embed-dim", "96", "--decoder-ffn-embed-dim", "64", "--dropout", "0"]
OPTIM = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "10", "--max-tokens", "1500", "--cpu", "--seed", "3", "--log-format", "json",
         "--log-interval", "1", "--num-workers", "0", "--disable-validation", "--no-epoch-checkpoints",
         "--distributed-backend", "gloo"]
KD = ["--task", "pet_distillation", "--criterion", "pet_kd", "--inter-beta", "5", "--encoder-layer-map", "1:2,2:4",
      "--decoder-layer-map", "1:2,2:4"]
WARMUP = ["--task", "pet_warmup", "--criterion", "pet_warmup", "--confidence-threshold", "0.3"]


def train(data: Path, teacher: Path, out: Path, stage: list[str], *extra: str, launcher: str = "one process"):
    """fairseq-train through the probe: 'one process', 'torchrun' (2 processes) or 'fairseq' (its launcher, 2)."""
    args = [str(data), "--user-dir", USER_DIR, "--teacher-path", str(teacher), *stage, *STUDENT, *OPTIM,
            "--save-dir", str(out / "save"), *extra]
    if launcher == "torchrun":
        cmd = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "tests.e2e.ddp_probe", *args]
    elif launcher == "fairseq":
        cmd = [sys.executable, "-m", "tests.e2e.ddp_probe", *args, "--distributed-world-size", "2"]
    else:
        cmd = [sys.executable, "-m", "tests.e2e.ddp_probe", *args]
    (out / "probe").mkdir(parents=True, exist_ok=True)
    proc = run(cmd, cwd=REPO, env={"PET_PROBE_DIR": str(out / "probe"), "OMP_NUM_THREADS": "1"})
    return proc.stdout + proc.stderr


def probe(out: Path, rank: int = 0) -> dict:
    return torch.load(out / "probe" / f"rank{rank}.pt", map_location="cpu")


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(((a[k] - b[k]).abs().max().item() for k in a), default=0.0)


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def check_one_job_equals_update_freq_2(two: Path, one: Path, log: str) -> tuple[dict, dict]:
    """The assertions shared by pet_kd and pet_warmup; returns the two ranks' records."""
    assert "distributed init (rank 0)" in log and "distributed init (rank 1)" in log
    r0, r1, single = probe(two, 0), probe(two, 1), probe(one)
    assert r0["world_size"] == r1["world_size"] == 2 and single["world_size"] == 1
    assert r0["num_updates"] == r1["num_updates"] == single["num_updates"] == UPDATES
    for k in range(UPDATES):
        (batch0,), (batch1,), pair = r0["batches"][k], r1["batches"][k], single["batches"][k]
        assert not set(batch0) & set(batch1)  # each rank trains on its own sentences
        assert pair == [batch0, batch1]  # the same two batches as the 1-process update
        assert identical(r0["grads"][k], r1["grads"][k]), f"update {k + 1}: the ranks' gradients differ"
        assert max_difference(r0["grads"][k], single["grads"][k]) <= TOLERANCE, f"update {k + 1}"
    for key in ("model", "criterion"):
        assert identical(r0[key], r1[key]), f"the ranks' {key} weights differ"
        assert max_difference(r0[key], single[key]) <= TOLERANCE, key
    # only rank 0 writes checkpoints
    assert (two / "probe" / "saves_rank0.txt").is_file() and not (two / "probe" / "saves_rank1.txt").exists()
    return r0, r1


def check_teacher_untouched(teacher: Path, *records: dict) -> None:
    saved = torch.load(teacher, map_location="cpu")["model"]
    for record in records:  # one frozen teacher per process, never synchronised, never trained
        assert identical(record["teacher"], {k: v.float() for k, v in saved.items()})
        assert not any("teacher" in k for k in record["model"]) and not any("teacher" in k for k in record["criterion"])


@pytest.fixture(scope="module")
def kd(multi30k_bin, tiny_teacher, tmp_path_factory):
    """pet_kd: 2 processes under torchrun (checkpoint after update 2) and 1 process with --update-freq 2."""
    base = tmp_path_factory.mktemp("distributed_kd")
    two = base / "two"
    log = train(multi30k_bin, tiny_teacher, two, KD, "--max-update", str(UPDATES), "--save-interval-updates", "2",
                launcher="torchrun")
    one = base / "one"
    train(multi30k_bin, tiny_teacher, one, KD, "--max-update", str(UPDATES), "--update-freq", "2")
    return two, one, log


def test_kd_on_two_processes_equals_one_process_with_update_freq_2(kd, tiny_teacher):
    two, one, log = kd
    r0, r1 = check_one_job_equals_update_freq_2(two, one, log)
    projections = [k for k in r0["grads"][0] if k.startswith("criterion.")]
    assert len(projections) == 4  # 2 encoder + 2 decoder KD projections, trained and synchronised
    assert all(r0["grads"][-1][k].abs().sum() > 0 for k in projections)
    check_teacher_untouched(tiny_teacher, r0, r1)
    assert len(train_losses(log)) == UPDATES  # rank 0 logs the job's updates once


def test_interrupted_distributed_kd_resumes_with_fairseqs_launcher(kd, multi30k_bin, tiny_teacher, tmp_path):
    """Resume from the checkpoint the 2-process run wrote after update 2, as a run stopped there would."""
    two, _, _ = kd
    resumed = tmp_path / "resumed"
    (resumed / "save").mkdir(parents=True)
    shutil.copy(two / "save" / "checkpoint_1_2.pt", resumed / "save" / "checkpoint_last.pt")
    log = train(multi30k_bin, tiny_teacher, resumed, KD, "--max-update", str(UPDATES), "--save-interval-updates", "2",
                launcher="fairseq")
    assert "Loaded checkpoint" in log and "(epoch 1 @ 2 updates)" in log
    straight, r0, r1 = probe(two), probe(resumed, 0), probe(resumed, 1)
    assert r0["world_size"] == 2 and r0["num_updates"] == UPDATES and len(r0["grads"]) == UPDATES - 2
    assert r0["batches"] == straight["batches"][2:]  # it continues where the checkpoint stopped
    for k in range(UPDATES - 2):
        assert identical(r0["grads"][k], r1["grads"][k])
        assert max_difference(r0["grads"][k], straight["grads"][k + 2]) <= TOLERANCE
    for key in ("model", "criterion"):
        assert identical(r0[key], r1[key]) and max_difference(r0[key], straight[key]) <= TOLERANCE
    check_teacher_untouched(tiny_teacher, r0, r1)
    last = torch.load(resumed / "save" / "checkpoint_last.pt", map_location="cpu")
    assert last["optimizer_history"][-1]["num_updates"] == UPDATES
    assert max_difference(last["model"], torch.load(two / "save" / "checkpoint_last.pt", map_location="cpu")["model"]) \
        <= TOLERANCE


def test_warmup_on_two_processes_equals_one_process_with_update_freq_2(multi30k_bin, tiny_teacher, tmp_path):
    log = train(multi30k_bin, tiny_teacher, tmp_path / "two", WARMUP, "--max-update", str(UPDATES), launcher="torchrun")
    train(multi30k_bin, tiny_teacher, tmp_path / "one", WARMUP, "--max-update", str(UPDATES), "--update-freq", "2")
    r0, r1 = check_one_job_equals_update_freq_2(tmp_path / "two", tmp_path / "one", log)
    assert not r0["criterion"]  # pet_warmup has no parameters of its own
    check_teacher_untouched(tiny_teacher, r0, r1)
    assert '"warmup_loss"' in log


@pytest.mark.parametrize("precision,student,teacher", [
    (["--bf16"], "torch.bfloat16", "torch.bfloat16"),  # teacher in the student's dtype (--teacher-dtype auto)
    (["--teacher-dtype", "bf16"], "torch.float32", "torch.bfloat16"),  # half teacher, fp32 student
])
def test_kd_trains_with_a_bf16_teacher(multi30k_bin, tiny_teacher, tmp_path, precision, student, teacher):
    log = train(multi30k_bin, tiny_teacher, tmp_path, KD, "--max-update", "2", "--max-tokens", "800", *precision)
    record = probe(tmp_path)
    assert (record["model_dtype"], record["teacher_dtype"]) == (student, teacher)
    losses = train_losses(log)
    assert len(losses) == 2 and all(0 < loss < float("inf") for loss in losses)
    assert all(torch.isfinite(g).all() for g in record["grads"][-1].values())
