"""teacher -> warm-up -> KD with the real CLIs (scripts/train_pet.sh, fairseq-train, fairseq-generate)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, VENV_BIN
from tests.e2e.conftest import USER_DIR, fairseq, run, train_losses

pytestmark = pytest.mark.e2e

TINY_TEACHER = ["--arch", "transformer", "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "64",
                "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
                "--share-all-embeddings"]
TINY_STUDENT = ["--encoder-embed-dim", "48", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "96",
                "--decoder-ffn-embed-dim", "64"]
MAPS = ["--encoder-layer-map", "1:2,2:4", "--decoder-layer-map", "1:2,2:4"]
OPTIM = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "10", "--max-tokens", "2000", "--cpu", "--seed", "3", "--log-format", "json", "--log-interval", "5"]


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def recipe(multi30k_bin, tmp_path_factory):
    """scripts/train_pet.sh end to end: teacher (40 updates), seq-KD corpus, student (20 updates, 25 % warm-up)."""
    out = tmp_path_factory.mktemp("recipe") / "run"
    cmd = ["bash", str(REPO / "scripts" / "train_pet.sh"), "--data-bin", str(multi30k_bin), "--out", str(out), "--cpu",
           "--teacher-arch", "transformer", "--teacher-max-update", "40", "--teacher-args", " ".join(TINY_TEACHER[2:]),
           "--student-updates", "20", "--warmup-fraction", "0.25", "--seqkd-args", "--beam 2 --threads 1",
           "--max-tokens", "2000", "--lr", "2e-3", "--warmup-updates", "10", "--student-args", " ".join(TINY_STUDENT),
           "--kd-mode", "online", "--teacher-validate-every", "20", "--teacher-patience", "2",
           "--kd-args", " ".join(MAPS + ["--inter-beta", "1", "--confidence-threshold", "0.3", "--log-format", "json",
                                         "--log-interval", "5"])]
    proc = run(cmd)
    return cmd, out, proc


@pytest.fixture(scope="module")
def teacher(recipe):
    return recipe[1] / "teacher" / "checkpoint_last.pt"


def test_train_pet_recipe_end_to_end(recipe, multi30k_bin):
    cmd, out, proc = recipe
    assert "fairseq log:" in proc.stderr and "| train_inner |" not in proc.stderr  # fairseq's output goes to files
    for name in ("dict.de.txt", "dict.en.txt", "valid.de-en.en.bin"):
        assert (out / "seqkd" / name).read_bytes() == (multi30k_bin / name).read_bytes()
    log = (out / "student" / "train.log").read_text()
    assert str(out / "seqkd") in log  # the student trains on the distilled corpus
    assert "warm-up on simplified targets for updates 1-5 of 20" in log
    windows = {int(d["num_updates"]): d for d in inner_stats(log)}
    assert windows[5]["warmup_loss"] is not None and "kd_loss" not in windows[5]  # updates 1-5: the warm-up phase
    # then KD (fairseq keeps the warm-up meter, without a value, in later windows)
    assert all(windows[10][k] is not None for k in ("kd_loss", "inter_loss", "nll_loss")) and windows[10]["warmup_loss"] is None
    assert float(windows[20]["nll_loss"]) < float(windows[10]["nll_loss"])
    teacher = out / "teacher" / "checkpoint_last.pt"
    assert teacher.stat().st_mtime <= (out / "teacher" / ".done").stat().st_mtime  # never written after its stage
    plateau = json.loads((out / "teacher" / "plateau.json").read_text())
    assert plateau["metric"] == "bleu" and [v["updates"] for v in plateau["validations"]] == [20, 40]
    assert "stopped at update 40" in proc.stderr and f"teacher: {out / 'teacher' / 'checkpoint_best.pt'}" in proc.stderr

    student = out / "student" / "checkpoint_last.pt"
    state = torch.load(student, map_location="cpu")
    assert not any("teacher" in k for k in state["model"])
    assert state["optimizer_history"][-1]["num_updates"] == 20
    assert set(state["criterion"]) == {f"{s}_projections.{i}.weight" for s in ("encoder", "decoder") for i in (0, 1)}
    gen = run([fairseq("generate"), str(multi30k_bin), "--user-dir", USER_DIR, "--path", str(student),
               "--gen-subset", "test", "--beam", "5", "--batch-size", "64", "--cpu", "--scoring", "sacrebleu"])
    assert sum(line.startswith("H-") for line in gen.stdout.splitlines()) == 100

    sha = sha256(teacher)
    again = run(cmd)  # finished stages are reused, not retrained or overwritten
    assert all(f"{stage}: reusing" in again.stderr for stage in ("teacher", "corpus", "student"))
    assert sha256(teacher) == sha


def test_train_pet_rejects_the_old_epoch_warmup_options(multi30k_bin, tmp_path):
    proc = subprocess.run(["bash", str(REPO / "scripts" / "train_pet.sh"), "--data-bin", str(multi30k_bin), "--out",
                           str(tmp_path / "x"), "--warmup-epochs", "3"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--student-updates N and --warmup-fraction F" in proc.stderr
    assert not (tmp_path / "x").exists()


def kd_cmd(data, teacher, save, max_epoch: int) -> list[str]:
    return [fairseq("train"), str(data), "--user-dir", USER_DIR, "--task", "pet_distillation", "--teacher-path", str(teacher),
            "--criterion", "pet_kd", "--arch", "pet_iwslt_de_en", *TINY_STUDENT, *MAPS, *OPTIM,
            "--max-epoch", str(max_epoch), "--save-dir", str(save), "--no-epoch-checkpoints", "--dropout", "0.1"]


def inner_stats(log: str) -> list[dict]:
    return [json.loads(line.split("| train_inner | ", 1)[1]) for line in log.splitlines() if "| train_inner | " in line]


def epoch_stats(log: str) -> dict:
    """The last end-of-epoch line of a ``--log-format json`` log (keys are prefixed ``train_``)."""
    lines = [json.loads(line.split("| train | ", 1)[1]) for line in log.splitlines() if "| train | " in line]
    return {k.removeprefix("train_"): v for k, v in lines[-1].items()}


def test_kd_resume_equals_straight_run(multi30k_bin, teacher, tmp_path):
    straight = run(kd_cmd(multi30k_bin, teacher, tmp_path / "straight", 2))
    first = run(kd_cmd(multi30k_bin, teacher, tmp_path / "resumed", 1))
    resumed = run(kd_cmd(multi30k_bin, teacher, tmp_path / "resumed", 2))
    assert "Loaded checkpoint" in resumed.stdout + resumed.stderr
    assert f"teacher {teacher}" in resumed.stdout + resumed.stderr  # the teacher is reloaded from --teacher-path
    a, b = epoch_stats(straight.stdout + straight.stderr), epoch_stats(resumed.stdout + resumed.stderr)
    assert a["epoch"] == b["epoch"] == 2 and a["num_updates"] == b["num_updates"]
    inner_a = {d["num_updates"]: d for d in inner_stats(straight.stdout + straight.stderr)}
    inner_b = inner_stats(resumed.stdout + resumed.stderr)[1:]  # the first window straddles the resume point
    assert len(inner_b) >= 2, "the resumed run logged too few updates"
    for d in inner_b:  # every later logging window after resuming matches the straight run
        for key in ("loss", "kd_loss", "inter_loss", "nll_loss"):
            assert abs(float(inner_a[d["num_updates"]][key]) - float(d[key])) < 1e-4, (key, inner_a[d["num_updates"]], d)
    wa = torch.load(tmp_path / "straight" / "checkpoint_last.pt", map_location="cpu")["model"]
    wb = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", map_location="cpu")["model"]
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4
    assert epoch_stats(first.stdout + first.stderr)["epoch"] == 1


def test_kronecker_student_from_teacher_trains_with_kd_and_decodes(multi30k_bin, teacher, tmp_path):
    init = tmp_path / "kron_init.pt"
    run([sys.executable, "-m",
         "pet_fairseq.kronecker_init", str(teacher), str(init), "--kronecker-ffn", "4,4", "--kronecker-attention", "2,2",
         "--encoder-layer-plan", "0,1,0~,1~", "--decoder-layer-plan", "0,1,0~,1~"])
    save = tmp_path / "kron"
    proc = run([fairseq("train"), str(multi30k_bin), "--user-dir", USER_DIR, "--task", "pet_distillation",
                "--teacher-path", str(teacher), "--criterion", "pet_kd", *MAPS, "--arch", "pet_transformer",
                *TINY_TEACHER[2:], "--encoder-layer-plan", "0,1,0~,1~", "--decoder-layer-plan", "0,1,0~,1~",
                "--encoder-layers", "4", "--decoder-layers", "4", "--no-decoder-query-sharing",
                "--kronecker-ffn", "4,4", "--kronecker-attention", "2,2", "--finetune-from-model", str(init),
                *OPTIM, "--max-update", "30", "--save-dir", str(save), "--no-epoch-checkpoints"])
    losses = train_losses(proc.stdout + proc.stderr)
    assert len(losses) >= 5 and losses[-1] < losses[0], losses
    gen = run([fairseq("generate"), str(multi30k_bin), "--user-dir", USER_DIR, "--path", str(save / "checkpoint_last.pt"),
               "--gen-subset", "test", "--beam", "5", "--batch-size", "64", "--cpu"])
    assert sum(line.startswith("H-") for line in gen.stdout.splitlines()) == 100


def test_cached_kd_recipe_resumes_to_a_larger_budget_and_refuses_other_options(recipe, multi30k_bin, tmp_path):
    """The default --kd-mode cached: a teacher cache on the corpus, KD without the teacher in the loop."""
    teacher = recipe[1] / "teacher" / "checkpoint_last.pt"
    out = tmp_path / "cached"
    base = ["bash", str(REPO / "scripts" / "train_pet.sh"), "--data-bin", str(multi30k_bin), "--out", str(out), "--cpu",
            "--teacher", str(teacher), "--seqkd-args", "--beam 2 --threads 1", "--max-tokens", "2000", "--lr", "2e-3",
            "--warmup-updates", "10", "--cache-k", "8", "--kd-args", "--log-format json --log-interval 5"]
    first = run(base + ["--student-updates", "10", "--student-args", " ".join(TINY_STUDENT)])
    assert "cache: the teacher's top-8 distributions" in first.stderr
    cache = json.loads((out / "cache" / "cache.json").read_text())
    assert cache["fingerprint"]["k"] == 8 and cache["sentences"] == 3000
    log = (out / "student" / "train.log").read_text()
    assert "training batches read it instead of running the teacher" in log
    stats = inner_stats(log)
    assert float(stats[-1]["kd_loss"]) > 0 and float(stats[-1]["inter_loss"]) == 0
    state = torch.load(out / "student" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert not state["criterion"]  # no intermediate loss: no projections

    more = run(base + ["--student-updates", "15", "--student-args", " ".join(TINY_STUDENT)])
    assert "student: resuming from 10 to 15 updates" in more.stderr
    state = torch.load(out / "student" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert state["optimizer_history"][-1]["num_updates"] == 15

    sha = sha256(out / "student" / "checkpoint_last.pt")
    other = subprocess.run(base + ["--student-updates", "15", "--student-args", " ".join(TINY_STUDENT) + " --dropout 0.2"],
                           capture_output=True, text=True)
    assert other.returncode == 2 and "the student stage" in other.stderr and "was run with other options" in other.stderr
    assert "--force" in other.stderr and sha256(out / "student" / "checkpoint_last.pt") == sha
    for bad in ("0", "-5", "x"):
        refused = subprocess.run(base + ["--student-updates", bad], capture_output=True, text=True)
        assert refused.returncode == 2 and f"--student-updates must be an integer >= 1, not '{bad}'" in refused.stderr
    assert sha256(out / "student" / "checkpoint_last.pt") == sha


def test_cached_kd_resume_equals_straight_run(multi30k_bin, teacher, tmp_path):
    cache = tmp_path / "cache"
    run([sys.executable, "-m", "pet_fairseq.kdcache", str(multi30k_bin), "--teacher", str(teacher), "--out", str(cache),
         "--k", "8", "--threads", "1"])
    cached = ["--teacher-cache", str(cache), "--inter-beta", "0", "--encoder-layer-map", "", "--decoder-layer-map", ""]

    def cmd(save, epochs):
        argv = kd_cmd(multi30k_bin, teacher, save, epochs)
        maps = argv.index("--encoder-layer-map")
        return argv[:maps] + argv[maps + 4:] + cached  # the cached run has no layer maps

    straight = run(cmd(tmp_path / "straight", 2))
    run(cmd(tmp_path / "resumed", 1))
    resumed = run(cmd(tmp_path / "resumed", 2))
    assert "Loaded checkpoint" in resumed.stdout + resumed.stderr
    inner_a = {d["num_updates"]: d for d in inner_stats(straight.stdout + straight.stderr)}
    inner_b = inner_stats(resumed.stdout + resumed.stderr)[1:]
    assert len(inner_b) >= 2
    for d in inner_b:
        for key in ("loss", "kd_loss", "nll_loss"):
            assert abs(float(inner_a[d["num_updates"]][key]) - float(d[key])) < 1e-4, (key, inner_a[d["num_updates"]], d)
    wa = torch.load(tmp_path / "straight" / "checkpoint_last.pt", map_location="cpu")["model"]
    wb = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", map_location="cpu")["model"]
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4


def test_a_cache_with_hidden_states_gives_the_online_intermediate_loss_without_the_teacher(multi30k_bin, teacher, tmp_path):
    """pet-kdcache --encoder-states/--decoder-states, then fairseq-train with the cache and the intermediate loss: the
    first update's intermediate loss equals the online teacher's (fp16 states), and no update runs the teacher."""
    cache = tmp_path / "cache"
    built = run([str(VENV_BIN / "pet-kdcache"), str(multi30k_bin), "--teacher", str(teacher), "--out", str(cache),
                 "--k", "8", "--threads", "1", "--encoder-states", "all", "--decoder-states", "all"])
    assert "encoder states of layers 1,2" in built.stderr and (cache / "encoder_2.npy").is_file()

    def first_update(save, *extra):
        argv = kd_cmd(multi30k_bin, teacher, save, 1) + ["--dropout", "0", "--log-interval", "1", "--max-update", "3",
                                                         *extra]
        return inner_stats(run(argv).stdout)[0]

    online = first_update(tmp_path / "online")
    cached = first_update(tmp_path / "cached", "--teacher-cache", str(cache))
    assert float(cached["inter_loss"]) > 0
    assert float(cached["inter_loss"]) == pytest.approx(float(online["inter_loss"]), rel=2e-3)
    assert float(cached["nll_loss"]) == pytest.approx(float(online["nll_loss"]), rel=1e-4)  # the same student


@pytest.mark.parametrize("bad,message", [
    (["--teacher-path", "/nonexistent/teacher.pt"], "error: teacher checkpoint '/nonexistent/teacher.pt' does not exist"),
    (["--kd-alpha", "2"], "error: need 0 <= --kd-alpha <= 1"),
])
def test_fairseq_train_reports_a_plugin_option_error_in_one_line(multi30k_bin, teacher, tmp_path, bad, message):
    argv = [fairseq("train"), str(multi30k_bin), "--user-dir", USER_DIR, "--task", "pet_distillation", "--teacher-path",
            str(teacher), "--arch", "pet_transformer", "--criterion", "pet_kd", *TINY_STUDENT, *OPTIM,
            "--max-update", "1", "--save-dir", str(tmp_path / "s"), *bad]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-2000:]
