"""Plateau stopping and checkpoint averaging (pet_fairseq.core.plateau)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pet_fairseq.core.plateau import interval_checkpoints, main, patience_stop, plateau, stop_report, valid_points
from tests.conftest import make_checkpoint, toy_dictionary, write_data_dir

# BLEU of a synthetic run validated every 100 updates: best 30.2 at update 600, then no better for 3 validations
BLEU = [10.0, 20.0, 25.0, 28.0, 29.5, 30.2, 30.0, 30.2, 29.9, 30.1]


def synthetic_log(values, every: int = 100, seconds_per_validation: int = 60, resume_after: int | None = None) -> str:
    lines, t = [], 0
    for i, bleu in enumerate(values):
        if resume_after is not None and i == resume_after:
            lines.append("# 2026-12-04 18:00:00 fairseq-train ... (resumed)")
            t += 3600  # the pause between the two calls is not the run's time
        t += seconds_per_validation
        h, m, s = 12 + t // 3600, t // 60 % 60, t % 60
        lines.append(f"2026-12-04 {h:02d}:{m:02d}:{s:02d} | INFO | train_inner | epoch 001: loss=3.0, num_updates={(i + 1) * every}")
        lines.append(f"2026-12-04 {h:02d}:{m:02d}:{s:02d} | INFO | valid | epoch 001 | valid on 'valid' subset | loss 4.{9 - i} | "
                     f"nll_loss 3.{9 - i} | ppl 9 | bleu {bleu} | wps 100 | num_updates {(i + 1) * every} | best_bleu {max(values[:i + 1])}")
    return "\n".join(lines) + "\n"


def fairseq_stop_index(values, patience: int, maximize: bool):
    """The validation at which fairseq's own should_stop_early says stop."""
    from fairseq_cli.train import should_stop_early

    for attr in ("best", "num_runs"):
        if hasattr(should_stop_early, attr):
            delattr(should_stop_early, attr)
    cfg = SimpleNamespace(checkpoint=SimpleNamespace(patience=patience, maximize_best_checkpoint_metric=maximize))
    return next((i for i, v in enumerate(values) if should_stop_early(cfg, v)), None)


@pytest.mark.parametrize("patience", [1, 2, 3, 4])
def test_patience_stop_is_fairseqs_rule(patience):
    assert patience_stop(BLEU, patience, maximize=True) == fairseq_stop_index(BLEU, patience, True)
    losses = [-v for v in BLEU]
    assert patience_stop(losses, patience, maximize=False) == fairseq_stop_index(losses, patience, False)


def test_a_synthetic_run_stops_at_the_right_update():
    # best 30.2 at update 600 (index 5); 30.0 (700) and 30.2 (800, not strictly better) and 29.9 (900) count 3 runs
    assert patience_stop(BLEU, 3, maximize=True) == 8  # -> stops after the validation at update 900
    assert patience_stop(BLEU, 5, maximize=True) is None  # runs to its budget
    assert patience_stop(BLEU, 0, maximize=True) is None


def test_plateau_compares_the_last_fifth_of_updates_with_the_rest():
    points = valid_points(synthetic_log(BLEU))
    flat = plateau(points, "bleu")  # updates 900-1000 vs up to 800: 30.1 vs 30.2
    assert flat == {"plateaued": True, "gain": pytest.approx(-0.1), "window_start": 800}
    rising = plateau(valid_points(synthetic_log(BLEU[:5])), "bleu")  # 29.5 at 500 vs 28.0 before 400
    assert rising["plateaued"] is False and rising["gain"] == pytest.approx(1.5)
    assert plateau(valid_points(synthetic_log(BLEU[:1])), "bleu")["plateaued"] is None
    assert plateau(points, "loss")["gain"] == pytest.approx(0.2)  # loss 4.1 -> 4.0 at the end: still falling by 0.2


def test_valid_points_carry_wall_seconds_without_the_pause_of_a_resume():
    points = valid_points(synthetic_log(BLEU, resume_after=5))
    assert [p.updates for p in points] == list(range(100, 1100, 100))
    assert [p.seconds for p in points[:5]] == [0, 60, 120, 180, 240]
    assert points[5].seconds == 240 and points[-1].seconds == 240 + 4 * 60  # the 1 h pause is not counted


def test_stop_report_names_the_stop_and_the_best(tmp_path, capsys):
    log = synthetic_log(BLEU[:9]) + "INFO | fairseq_cli.train | early stop since valid performance hasn't improved for last 3 runs\n"
    report = stop_report(log, "bleu")
    assert (report["stopped_at_update"], report["best_update"], report["best_value"], report["early_stop"]) == (900, 600, 30.2, True)
    (tmp_path / "train.log").write_text(log)
    assert main(["report", str(tmp_path / "train.log"), "--json", str(tmp_path / "p.json")]) == 0
    assert "stopped at update 900 after 480 s (early stop" in capsys.readouterr().out
    assert (tmp_path / "p.json").is_file()
    with pytest.raises(ValueError, match="carry no bleu"):
        stop_report(log.replace("| bleu ", "| bleux "), "bleu")


def test_averaging_two_checkpoints_gives_their_mean_weights(tmp_path):
    data = write_data_dir(tmp_path / "data", toy_dictionary(40))
    args = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
            "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32"]
    a, model_a, _ = make_checkpoint(tmp_path / "checkpoint_3_100.pt", data, "transformer", *args, seed=1)
    b, model_b, _ = make_checkpoint(tmp_path / "checkpoint_5_200.pt", data, "transformer", *args, seed=2)
    make_checkpoint(tmp_path / "checkpoint_2_50.pt", data, "transformer", *args, seed=3)
    assert [p.name for p in interval_checkpoints(tmp_path)] == ["checkpoint_2_50.pt", "checkpoint_3_100.pt", "checkpoint_5_200.pt"]
    assert main(["average", str(tmp_path), "--last", "2", "--out", str(tmp_path / "avg.pt")]) == 0
    avg = torch.load(tmp_path / "avg.pt", map_location="cpu", weights_only=False)["model"]
    sa, sb = model_a.state_dict(), model_b.state_dict()
    for key in sa:
        torch.testing.assert_close(avg[key], (sa[key] + sb[key]) / 2)
    assert main(["average", str(tmp_path), "--last", "4", "--out", str(tmp_path / "x.pt")]) == 2


def test_average_refuses_an_out_that_is_one_of_its_inputs_and_names_last_below_two(tmp_path, capsys):
    """average never writes over one of its inputs, and --last below 2 is refused."""
    data = write_data_dir(tmp_path / "data", toy_dictionary(40))
    args = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
            "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32"]
    sd = tmp_path / "sd"
    sd.mkdir()
    for seed, name in ((1, "checkpoint_1_10.pt"), (2, "checkpoint_1_20.pt")):
        make_checkpoint(sd / name, data, "transformer", *args, seed=seed)
    before = {p.name: p.read_bytes() for p in sd.iterdir()}
    capsys.readouterr()
    cases = [
        (["--last", "2", "--out", str(sd / "checkpoint_1_20.pt")],
         f"error: --out {sd / 'checkpoint_1_20.pt'} is checkpoint_1_20.pt, one of the checkpoints being averaged; "
         f"choose another --out (e.g. {sd / 'checkpoint_avg2.pt'})"),
        (["--last", "2", "--out", str(sd / "checkpoint_2_30.pt")],
         f"error: --out {sd / 'checkpoint_2_30.pt'} is named like an interval checkpoint (checkpoint_E_U.pt) in {sd}, "
         f"so a later average would take it for one; choose another --out (e.g. {sd / 'checkpoint_avg2.pt'})"),
        (["--last", "0", "--out", str(tmp_path / "avg.pt")],
         "error: --last 0: an average needs at least 2 checkpoints; pass --last 2 or more"),
    ]
    for extra, message in cases:
        assert main(["average", str(sd), *extra]) == 2
        assert capsys.readouterr().err.splitlines()[-1] == message
    assert {p.name: p.read_bytes() for p in sd.iterdir()} == before
    assert main(["average", str(sd), "--last", "2", "--out", str(sd / "checkpoint_avg2.pt")]) == 0


def test_report_reads_a_log_with_invalid_utf8(tmp_path, capsys):
    """A log with bytes that are not UTF-8 is read (with replacement characters), not a UnicodeDecodeError."""
    log = tmp_path / "train.log"
    log.write_bytes(synthetic_log(BLEU[:9]).encode() + b"a stray \xff byte\n")
    before = log.read_bytes()
    assert main(["report", str(log)]) == 0
    assert "stopped at update 900" in capsys.readouterr().out and log.read_bytes() == before
    bad = tmp_path / "bad.de"
    bad.write_bytes(b"ein hund\n\xff\xfe\n")
    assert main(["report", str(bad)]) == 2
    assert capsys.readouterr().err == "error: the log holds no validation line ('valid on 'valid' subset')\n"
