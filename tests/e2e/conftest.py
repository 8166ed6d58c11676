"""Fixtures for end-to-end tests: real Multi30k slices binarized with the real fairseq-preprocess."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, VENV_BIN, shared_data

USER_DIR = str(REPO / "pet_fairseq")


def run(cmd: list[str], cwd: Path | None = None, timeout: int = 600,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a CLI (``env`` adds to the environment); on failure show its output so the test report says why."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env} if env else None)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def fairseq(tool: str) -> str:
    return str(VENV_BIN / f"fairseq-{tool}")


def tokenize_slice(src: Path, dst: Path, lang: str, start: int, count: int) -> None:
    from sacremoses import MosesTokenizer

    tok = MosesTokenizer(lang=lang)
    lines = src.read_text(encoding="utf-8").splitlines()[start : start + count]
    dst.write_text("".join(tok.tokenize(line.lower(), return_str=True) + "\n" for line in lines), encoding="utf-8")


@pytest.fixture(scope="session")
def multi30k_bin(tmp_path_factory) -> Path:
    """3,000 train / 200 valid / 100 test Multi30k de->en pairs, Moses-tokenized, lowercased, binarized."""
    raw = shared_data("multi30k-de-en")
    work = tmp_path_factory.mktemp("multi30k")
    for split, src_split, start, count in [("train", "train", 0, 3000), ("valid", "val", 0, 200), ("test", "test", 0, 100)]:
        for lang in ("de", "en"):
            tokenize_slice(raw / f"{src_split}.{lang}", work / f"{split}.{lang}", lang, start, count)
    run([fairseq("preprocess"), "--source-lang", "de", "--target-lang", "en", "--joined-dictionary",
         "--trainpref", str(work / "train"), "--validpref", str(work / "valid"), "--testpref", str(work / "test"),
         "--thresholdtgt", "2", "--thresholdsrc", "2", "--destdir", str(work / "bin"), "--workers", "2"])
    return work / "bin"


def train_losses(log: str, tag: str = "train_inner") -> list[float]:
    """Losses from fairseq's ``--log-format json`` lines."""
    losses = []
    for line in log.splitlines():
        if f"| {tag} |" in line:
            losses.append(float(json.loads(line.split(f"| {tag} | ", 1)[1])["loss"]))
    return losses


TINY_TEACHER_ARGS = ["--arch", "transformer", "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "64",
                     "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
                     "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--share-all-embeddings"]


@pytest.fixture(scope="session")
def tiny_teacher(multi30k_bin, tmp_path_factory) -> Path:
    """A 2+2-layer width-64 transformer trained for 60 updates on ``multi30k_bin`` (checkpoint_last.pt)."""
    save = tmp_path_factory.mktemp("tiny_teacher")
    run([fairseq("train"), str(multi30k_bin), "--source-lang", "de", "--target-lang", "en", *TINY_TEACHER_ARGS,
         "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "20", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
         "--max-tokens", "2000", "--max-update", "60", "--cpu", "--seed", "1", "--save-dir", str(save),
         "--no-epoch-checkpoints", "--num-workers", "0", "--log-format", "simple"])
    return save / "checkpoint_last.pt"
