"""End to end: train tiny Multi30k checkpoints, then run the comparison CLI as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SHARED = Path(os.environ.get("PET_SHARED_DATA", ROOT / ".." / "shared" / "data"))
MULTI30K = SHARED / "multi30k-de-en"
N_TRAIN, N_VALID, N_TEST, N_TIMED = 1000, 100, 100, 50
TINY = ["--encoder-embed-dim", "64", "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
        "--decoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
TEACHER = ["--encoder-embed-dim", "128", "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "256",
           "--decoder-ffn-embed-dim", "256", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args[:4])} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def _tokenize(src: Path, dst: Path, lang: str, n: int) -> None:
    from sacremoses import MosesTokenizer

    tok = MosesTokenizer(lang=lang)
    with src.open(encoding="utf-8") as lines:
        out = [tok.tokenize(next(lines).strip(), return_str=True).lower() for _ in range(n)]
    dst.write_text("".join(line + "\n" for line in out), encoding="utf-8")


def _train(tmp: Path, name: str, model: list[str]) -> subprocess.Popen:
    """Start a short fairseq-train run (the three runs overlap; each uses one thread)."""
    command = [str(BIN / "fairseq-train"), "data-bin", "--user-dir", str(ROOT / "pet_fairseq"), *model,
               "--optimizer", "adam", "--lr", "0.003", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "5",
               "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-tokens", "2000",
               "--max-update", "15", "--cpu", "--seed", "1", "--num-workers", "0", "--no-progress-bar",
               "--save-dir", name, "--no-epoch-checkpoints", "--no-last-checkpoints"]
    with (tmp / f"{name}.log").open("w") as log:  # a file, not a pipe: concurrent runs cannot block on it
        return subprocess.Popen(command, cwd=tmp, env=_env(), stdout=log, stderr=subprocess.STDOUT)


def _wait(tmp: Path, name: str, proc: subprocess.Popen) -> None:
    proc.wait(timeout=600)
    log = (tmp / f"{name}.log").read_text(errors="replace")
    assert proc.returncode == 0, f"fairseq-train {name} failed ({proc.returncode}):\n{log[-4000:]}"


def _compare(tmp: Path, out: str, models: list[Path], labels: str, *extra: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "pet_fairseq.evaluation.compare", "--data-bin", str(tmp / "data-bin"),
                 "--subset", "test", "--threads", "1", "--batch-size", "32", "--max-len-a", "1.2",
                 "--max-len-b", "10", "--labels", labels, "--out-dir", str(tmp / out), *extra, *map(str, models)],
                cwd=tmp, check=False)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Tokenized, binarized Multi30k slices and tiny trained checkpoints: teacher, student, pet."""
    if not (MULTI30K / "train.de").is_file():
        pytest.skip(f"Multi30k not found at {MULTI30K}: needs ../shared/data (or set PET_SHARED_DATA)")
    tmp = tmp_path_factory.mktemp("compare_e2e")
    (tmp / "text").mkdir()
    for split, src, n in (("train", "train", N_TRAIN), ("valid", "val", N_VALID), ("test", "test", N_TEST)):
        for lang in ("de", "en"):
            _tokenize(MULTI30K / f"{src}.{lang}", tmp / "text" / f"{split}.{lang}", lang, n)
    _run([str(BIN / "fairseq-preprocess"), "--source-lang", "de", "--target-lang", "en", "--joined-dictionary",
          "--trainpref", "text/train", "--validpref", "text/valid", "--testpref", "text/test",
          "--destdir", "data-bin", "--workers", "1"], cwd=tmp)
    runs = {
        "teacher": _train(tmp, "teacher", ["--arch", "transformer", "--encoder-layers", "2", "--decoder-layers", "2",
                                           "--share-decoder-input-output-embed", *TEACHER]),
        "student": _train(tmp, "student", ["--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
                                           "--share-all-embeddings", *TINY]),
        # the plugin's PET student (layers reused across depth), loaded through the same CLI
        "pet": _train(tmp, "pet", ["--arch", "pet_iwslt_de_en", *TINY]),
    }
    for name, proc in runs.items():
        _wait(tmp, name, proc)
    return tmp


@pytest.fixture(scope="module")
def compared(workspace: Path) -> tuple[subprocess.CompletedProcess, dict]:
    models = [workspace / name / "checkpoint_best.pt" for name in ("teacher", "student", "pet")]
    proc = _compare(workspace, "out", models, "teacher,student,pet", "--repeats", "2",
                    "--max-sentences", str(N_TIMED))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc, json.loads((workspace / "out" / "report.json").read_text())


def test_table_lists_every_model_with_both_bleu_variants(compared):
    proc, _ = compared
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("| model | BLEU (sacrebleu detok) | BLEU (tok, IWSLT-style) |")
    assert [line.split("|")[1].strip() for line in lines[2:5]] == ["teacher", "student", "pet"]
    assert "FAILED" not in proc.stdout
    assert any(line.startswith("BLEU (sacrebleu detok): nrefs:1|case:mixed|eff:no|tok:13a") for line in lines)
    assert any(line.startswith("BLEU (tok, IWSLT-style): nrefs:1|case:lc|eff:no|tok:none") for line in lines)


def test_json_has_environment_settings_and_ratios_to_the_first_model(compared):
    _, report = compared
    env = report["environment"]
    assert {"torch", "fairseq", "python", "cpu_model", "device", "threads"} <= set(env)
    assert (env["device"], env["threads"], env["torch"]) == ("cpu", 1, torch.__version__)
    assert report["settings"]["beam"] == 5 and report["reference"] == "teacher"
    teacher, student, pet = report["models"]
    assert teacher["status"] == student["status"] == pet["status"] == "ok"
    assert teacher["ratios"]["unique_parameters"] == 1.0
    assert teacher["ratios"]["sentences_per_second"] == 1.0
    assert teacher["ratios"]["inference_checkpoint_bytes"] == 1.0
    assert teacher["ratios"]["bleu_detok_delta"] == 0.0
    sm, tm = student["memory"], teacher["memory"]
    assert student["ratios"]["unique_parameters"] == pytest.approx(sm["unique_parameters"] / tm["unique_parameters"])
    assert student["ratios"]["sentences_per_second"] == pytest.approx(
        student["speed"]["sentences_per_second"] / teacher["speed"]["sentences_per_second"])
    assert student["ratios"]["bleu_tok_delta"] == pytest.approx(student["bleu"]["tok"] - teacher["bleu"]["tok"])
    assert sm["unique_parameters"] < tm["unique_parameters"]
    assert pet["memory"]["unique_parameters"] < tm["unique_parameters"]
    assert pet["ratios"]["inference_checkpoint_bytes"] < 1.0


def test_speed_is_median_of_the_requested_repeats_over_the_slice(compared):
    _, report = compared
    for row in report["models"]:
        speed = row["speed"]
        assert len(speed["seconds"]) == 2 and speed["warmup_calls"] == 1
        assert speed["sentences"] == N_TIMED
        assert speed["tokens"] >= N_TIMED  # at least the EOS of every sentence
        assert speed["median_seconds"] == pytest.approx(sum(speed["seconds"]) / 2)
        assert speed["sentences_per_second"] == pytest.approx(N_TIMED / speed["median_seconds"])
        assert row["sentences"] == N_TEST  # BLEU covers the whole subset, not the timed slice


def test_memory_figures(compared, workspace):
    _, report = compared
    for row in report["models"]:
        mem = row["memory"]
        # optimizer (Adam: 2 moments per parameter) and criterion state are stripped
        assert mem["inference_checkpoint_bytes"] < mem["checkpoint_bytes"] / 2
        # fp32 weights + config pickle and buffers: within 64 KiB of 4 bytes per unique parameter
        assert 4 * mem["unique_parameters"] <= mem["inference_checkpoint_bytes"] <= 4 * mem["unique_parameters"] + 65536
        assert mem["peak_rss_bytes"] > mem["rss_before_load_bytes"] > 0
        assert mem["peak_gpu_bytes"] is None
    # the student shares encoder, decoder and output embeddings: one V x 64 matrix, not three
    state = torch.load(workspace / "student" / "checkpoint_best.pt", map_location="cpu")["model"]
    weights = {k: v for k, v in state.items() if not k.endswith(("version", "_float_tensor"))}
    vocab = state["encoder.embed_tokens.weight"].shape[0]
    student = report["models"][1]["memory"]
    assert student["unique_parameters"] == sum(v.numel() for v in weights.values()) - 2 * vocab * 64
    assert student["registered_parameters"] == student["unique_parameters"] + 2 * vocab * 64


def test_bleu_is_recomputable_from_the_written_texts(compared, workspace):
    from sacrebleu.metrics import BLEU

    _, report = compared
    for row in report["models"]:
        files = {k: Path(v).read_text(encoding="utf-8").splitlines() for k, v in row["files"].items()}
        assert all(len(lines) == N_TEST for lines in files.values())
        assert 0.0 <= row["bleu"]["detok"] <= 100.0 and 0.0 <= row["bleu"]["tok"] <= 100.0
        recomputed = BLEU().corpus_score(files["hyp_detok"], [files["ref_detok"]]).score
        assert row["bleu"]["detok"] == pytest.approx(recomputed)


def test_references_are_the_binarized_target_side(compared, workspace):
    _, report = compared
    vocab = {line.split()[0] for line in (workspace / "data-bin" / "dict.en.txt").read_text().splitlines()}
    original = (workspace / "text" / "test.en").read_text(encoding="utf-8").splitlines()
    expected = [" ".join(w if w in vocab else "<<unk>>" for w in line.split()) for line in original]
    refs = Path(report["models"][0]["files"]["ref_tok"]).read_text(encoding="utf-8").splitlines()
    assert refs == expected
    detok = Path(report["models"][0]["files"]["ref_detok"]).read_text(encoding="utf-8").splitlines()
    assert detok[0] != refs[0] and detok[0].rstrip(".").strip() == refs[0].rstrip(" .")  # "... ." -> "...."


def test_plot_is_written(compared, workspace):
    png = workspace / "out" / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_a_failing_model_keeps_the_other_rows_and_fails_the_run(workspace):
    bogus = workspace / "notes.pt"
    bogus.write_text("not a checkpoint\n")
    proc = _compare(workspace, "out-failed", [bogus, workspace / "student" / "checkpoint_best.pt"], "broken,student",
                    "--repeats", "1", "--max-sentences", "8")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"| broken | FAILED: {bogus} is not a fairseq checkpoint" in proc.stdout
    assert proc.stderr.splitlines()[-1].startswith(
        f"error: 1 of 2 models failed (their rows say FAILED): broken: {bogus} is not a fairseq checkpoint")
    report = json.loads((workspace / "out-failed" / "report.json").read_text())
    broken, student = report["models"]
    assert broken["status"] == "failed" and "not a fairseq checkpoint" in broken["error"]
    assert student["status"] == "ok" and student["speed"]["sentences"] == 8
    assert broken["ratios"] is None and student["ratios"] is None  # no reference to compare with
