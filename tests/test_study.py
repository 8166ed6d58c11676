"""The study's spec, command lines, cache of finished runs and learning-curve parsing (no training)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pet_fairseq.study.curves import valid_points
from pet_fairseq.study.runner import Job, plan_jobs, run_jobs
from pet_fairseq.study.spec import Setup, SpecError, load_spec, parse_spec, train_command
from tests.conftest import REPO

SPEC = {
    "budget": 40, "curve_points": 2, "common_args": "--optimizer adam --lr 1e-3",
    "students": {"tiny": "--arch pet_transformer --encoder-layer-plan 0,0~"},
    "corpora": {"beam2": {"engine": "fairseq", "beam": 2}},
    "variants": [
        {"name": "ce", "student": "tiny", "criterion": "ce"},
        {"name": "kd", "student": "tiny", "criterion": "kd", "corpus": "beam2", "seed": 3, "args": "--kd-alpha 0.5"},
    ],
}
SETUP = Setup(Path("/data"), Path("/t.pt"), "de", "en", Path("/plugin"))


SHIPPED_SPECS = sorted((REPO / "configs" / "study").glob("*.json"))


@pytest.mark.parametrize("path", SHIPPED_SPECS, ids=lambda p: p.name)
def test_every_shipped_study_spec_is_valid_and_uses_all_it_declares(path):
    spec = load_spec(path)
    names = [v.name for v in spec.variants]
    assert len(set(names)) == len(names)
    assert {v.student for v in spec.variants} == set(spec.students)
    assert {v.corpus for v in spec.variants if v.corpus} == set(spec.corpora)


@pytest.mark.parametrize("name", ["multi30k.json", "iwslt14-full.json"])
def test_the_quickstart_specs_hold_its_two_variants(name):
    assert REPO / "configs" / "study" / name in SHIPPED_SPECS
    names = {v.name for v in load_spec(REPO / "configs" / "study" / name).variants}
    assert {"no-kd", "seqkd-wordkd-inter"} <= names  # scripts/quickstart.sh --only no-kd,seqkd-wordkd-inter


def test_commands_follow_the_variant():
    spec = parse_spec(SPEC)
    ce = train_command(spec, spec.variant("ce"), SETUP, SETUP.data_bin, Path("/out/ce"))
    kd = train_command(spec, spec.variant("kd"), SETUP, Path("/out/corpora/beam2"), Path("/out/kd"))
    assert ce[:1] == ["/data"] and ce[ce.index("--criterion") + 1] == "label_smoothed_cross_entropy"
    assert "--teacher-path" not in ce and ce[ce.index("--seed") + 1] == "1"
    assert kd[:1] == ["/out/corpora/beam2"] and kd[kd.index("--teacher-path") + 1] == "/t.pt"
    assert kd[kd.index("--max-update") + 1] == "40" and kd[kd.index("--validate-interval-updates") + 1] == "20"
    assert kd[-2:] == ["--kd-alpha", "0.5"]  # variant options come last, so they win
    assert json.loads(kd[kd.index("--eval-bleu-detok-args") + 1]) == {"source_lang": "de", "target_lang": "en"}


@pytest.mark.parametrize("change,message", [
    (lambda s: s["variants"].append(dict(s["variants"][0])), "declared more than once"),
    (lambda s: s["variants"][0].update(student="huge"), "unknown student 'huge'"),
    (lambda s: s["variants"][1].update(corpus="greedy"), "unknown corpus 'greedy'"),
    (lambda s: s["variants"][0].update(criterion="mse"), "criterion must be one of ce, kd"),
    (lambda s: s["variants"][0].update(lr=1), r"unknown key\(s\) lr"),
    (lambda s: s.update(budget=0), "budget and curve_points must be >= 1"),
])
def test_bad_specs_name_the_problem(change, message):
    spec = json.loads(json.dumps(SPEC))
    change(spec)
    with pytest.raises(SpecError, match=message):
        parse_spec(spec)


def test_plan_puts_each_corpus_before_its_first_user_and_links_dependencies(tmp_path):
    jobs = plan_jobs(parse_spec(SPEC), SETUP, tmp_path, Path("fairseq-train"), Path("python"))
    assert [j.name for j in jobs] == ["ce", "corpus:beam2", "kd"]
    assert jobs[2].needs == ["corpus:beam2"] and jobs[2].argv[1] == str(tmp_path / "corpora" / "beam2")
    assert jobs[1].argv[1:3] == ["-m", "pet_fairseq.seqkd"] and jobs[1].marker.name == "seqkd.json"
    only = plan_jobs(parse_spec(SPEC), SETUP, tmp_path, Path("fairseq-train"), Path("python"), only=["ce"])
    assert [j.name for j in only] == ["ce"]


def script_job(tmp_path: Path, name: str, code: str, needs=()) -> Job:
    out = tmp_path / name
    return Job(name, [sys.executable, "-c", code], out, out / ".done", out / "train.log", list(needs))


def test_finished_runs_are_cached_and_failures_skip_their_dependants(tmp_path):
    ok = script_job(tmp_path, "a", f"open(r'{tmp_path / 'a' / 'checkpoint_last.pt'}', 'w').write('x')")
    bad = script_job(tmp_path, "b", "raise SystemExit(3)")
    child = script_job(tmp_path, "c", "print('never')", needs=["b"])
    assert run_jobs([ok, bad, child], parallel=2) == {"a": "ok", "b": "failed", "c": "skipped"}
    assert json.loads(ok.marker.read_text())["wall_seconds"] >= 0
    assert "exit" not in ok.log.read_text() and not child.log.exists()
    # second call: the finished run is not started again (its command would now fail)
    again = script_job(tmp_path, "a", f"open(r'{tmp_path / 'a' / 'checkpoint_last.pt'}', 'w').write('x')")
    assert run_jobs([again]) == {"a": "cached"}


def test_a_cached_run_with_another_command_is_refused(tmp_path):
    job = script_job(tmp_path, "a", f"open(r'{tmp_path / 'a' / 'checkpoint_last.pt'}', 'w').write('x')")
    assert run_jobs([job]) == {"a": "ok"}
    edited = script_job(tmp_path, "a", "print('edited variant')")
    with pytest.raises(SpecError, match=r"a was run with other options \(differing: .*edited variant"):
        run_jobs([edited])


def test_a_finished_run_is_kept_when_only_the_interpreter_path_changes(tmp_path):
    job = script_job(tmp_path, "a", f"open(r'{tmp_path / 'a' / 'checkpoint_last.pt'}', 'w').write('x')")
    assert run_jobs([job]) == {"a": "ok"}
    job.argv[0] = str(Path(sys.executable).parent / "python-reinstalled")  # never started: the run is reused
    assert run_jobs([job]) == {"a": "cached"}
    job.argv[1:] = ["-c", "print('other')"]
    with pytest.raises(SpecError, match="was run with other options"):
        run_jobs([job])


def test_a_running_job_reports_its_progress_instead_of_a_bar(tmp_path, caplog):
    code = (f"import sys, time; print('| num_updates 7', flush=True); time.sleep(1.5); "
            f"open(r'{tmp_path / 'a' / 'checkpoint_last.pt'}', 'w').write('x')")
    job = script_job(tmp_path, "a", code)
    job.argv += ["--max-update", "9"]
    with caplog.at_level(logging.INFO):
        assert run_jobs([job], threads=None, report_every=0.4) == {"a": "ok"}
    assert "a: 7 / 9 updates" in caplog.text and "(fairseq log: " in caplog.text
    assert json.loads(job.marker.read_text())["threads"] is None  # the environment's threads


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a container's init may not reap the orphans it inherits)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# the runner in a process of its own, running a job whose worker ignores SIGTERM (a stuck fairseq-train worker)
RUNNER = """
import signal, sys
from pathlib import Path
from pet_fairseq.study import runner
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background shell ignores it)
runner.STOP_GRACE = 1.0
out = Path(sys.argv[1])
worker = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
code = ("import os, subprocess, sys, time; w = subprocess.Popen([sys.executable, '-c', %r]); "
        "open(%r, 'w').write(f'{os.getpid()} {w.pid}'); time.sleep(120)") % (worker, str(out.parent / "pids"))
job = runner.Job("a", [sys.executable, "-c", code], out, out / ".done", out / "train.log")
try:
    runner.run_jobs([job])
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_runner_stops_its_job_and_the_jobs_workers_and_marks_nothing_finished(tmp_path, sig, code):
    out, pids = tmp_path / "a", tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(out)], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not pids.is_file() or len(pids.read_text().split()) < 2:
            assert time.time() < deadline and proc.poll() is None, "the job did not start"
            time.sleep(0.1)
        started = [int(p) for p in pids.read_text().split()]
        proc.send_signal(sig)
        assert proc.wait(60) == code
        assert re.search(r"a: stopped \(killed what was left of it after \d+ s\); it resumes from its last checkpoint",
                         proc.stderr.read())
        deadline = time.time() + 5
        while any(_alive(p) for p in started) and time.time() < deadline:
            time.sleep(0.1)
        assert not [p for p in started if _alive(p)], "the job or its worker outlived the runner"
        assert not (out / ".done").exists() and not (out / "checkpoint_last.pt").exists()
    finally:
        proc.kill()
        for pid in [int(p) for p in pids.read_text().split()] if pids.is_file() else []:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_text_record_holds_one_argument_a_line(tmp_path):
    from pet_fairseq.study.runner import read_record, write_record

    args = ["data", "--encoder-layer-map", "", "--adam-betas", "(0.9, 0.98)"]
    write_record(tmp_path / "command.txt", args)
    assert (tmp_path / "command.txt").read_text() == "data\n--encoder-layer-map\n\n--adam-betas\n(0.9, 0.98)\n"
    assert read_record(tmp_path / "command.txt") == args
    write_record(tmp_path / "command.json", args)
    assert read_record(tmp_path / "command.json") == args
    with pytest.raises(SpecError, match="line break"):
        write_record(tmp_path / "x.txt", ["a\nb"])


LOG = """\
2026-12-01 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 9.1 | nll_loss 8.5 | ppl 362 | bleu 0.4 | wps 9 | num_updates 75
2026-12-01 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 6.2 | nll_loss 5.25 | ppl 38 | bleu 12.75 | wps 9 | num_updates 150 | best_loss 6.2
2026-12-01 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 6.1 | nll_loss 5.0 | ppl 32 | bleu 13 | wps 9 | num_updates 150
"""


def test_valid_points_parse_nll_and_bleu_and_keep_the_last_of_a_repeated_update():
    points = valid_points(LOG)
    assert [(p.updates, p.nll_bits, p.bleu) for p in points] == [(75, 8.5, 0.4), (150, 5.0, 13.0)]


def test_equal_time_spec_plans_corpus_cache_and_partners(tmp_path):
    from pet_fairseq.study.runner import cache_dir, plan_jobs

    spec = load_spec(REPO / "configs" / "study" / "multi30k-equal-time.json")
    setup = Setup(tmp_path / "bin", tmp_path / "t.pt", "de", "en", REPO / "pet_fairseq")
    jobs = {j.name: j for j in plan_jobs(spec, setup, tmp_path, Path("fairseq-train"), Path("python"))}
    assert list(jobs) == ["cache:references-k16-states", "distilled", "cache:references-k16", "ref-kd", "no-kd",
                          "corpus:beam5", "cache:beam5-k16", "seqkd-distilled", "ref-kd-seed2", "no-kd-seed2", "distilled-seed2",
                          "ref-kd-seed3", "no-kd-seed3", "online-kd-seed3", "no-kd-equal-updates", "online-kd-equal-updates",
                          "online-600", "online-600-seed2", "online-nointer-600", "online-nointer-600-seed2", "cached-600",
                          "cached-600-seed2", "cached-inter-600", "cached-inter-600-seed2", "ref-kd-inter-1200", "no-kd-1200"]
    references = jobs["cache:references-k16"]  # word KD on the references: the cache is made from the data-bin
    assert references.argv[1:4] == ["-m", "pet_fairseq.kdcache", str(tmp_path / "bin")] and references.needs == []
    assert jobs["ref-kd"].charges == ["cache:references-k16"] and jobs["ref-kd"].seconds == 2400
    cache = jobs["cache:beam5-k16"]
    assert cache.argv[1:4] == ["-m", "pet_fairseq.kdcache", str(tmp_path / "corpora" / "beam5")]
    assert cache.needs == ["corpus:beam5"] and cache.marker == cache_dir(tmp_path, "beam5-k16") / "cache.json"
    distilled = jobs["distilled"]  # the quickstart's lane: word KD and the intermediate loss, both from the cache
    assert distilled.charges == ["cache:references-k16-states"] and distilled.seconds == 2400
    argv = distilled.argv
    assert argv[argv.index("--teacher-cache") + 1] == str(cache_dir(tmp_path, "references-k16-states"))
    assert argv[argv.index("--inter-beta") + 1] == "2" and "--stop-time-hours" not in argv  # added at start
    assert jobs["distilled-seed2"].charges == ["cache:references-k16-states"]
    seqkd = jobs["seqkd-distilled"]
    assert seqkd.charges == ["corpus:beam5", "cache:beam5-k16"] and seqkd.argv[seqkd.argv.index("--inter-beta") + 1] == "0"
    assert seqkd.argv[seqkd.argv.index("--teacher-cache") + 1] == str(cache_dir(tmp_path, "beam5-k16"))
    assert jobs["no-kd"].charges == [] and jobs["no-kd"].seconds == 2400
    seed2 = jobs["ref-kd-seed2"]  # a second seed shares the cache and pays for it like the first
    assert seed2.charges == ["cache:references-k16"] and seed2.argv[seed2.argv.index("--seed") + 1] == "2"
    assert jobs["no-kd-equal-updates"].needs == ["distilled"] and jobs["no-kd-equal-updates"].charges == []
    online_partner = jobs["online-kd-equal-updates"]  # the same loss with the teacher in the loop: what the cache costs
    assert online_partner.charges == [] and online_partner.needs == ["distilled"]
    assert "--teacher-cache" not in online_partner.argv and online_partner.argv[online_partner.argv.index("--inter-beta") + 1] == "2"
    online, cached = jobs["online-600"], jobs["cached-600"]  # cached against online KD at equal updates
    assert online.argv[online.argv.index("--max-update") + 1] == "600" == cached.argv[cached.argv.index("--max-update") + 1]
    assert "--teacher-cache" not in online.argv and cached.charges == ["cache:references-k16"]
    timed_online = jobs["online-kd-seed3"]  # the teacher in the loop, for the same time as its no-KD partner
    assert timed_online.seconds == jobs["no-kd-seed3"].seconds == 2400 and timed_online.charges == []
    assert "--teacher-cache" not in timed_online.argv and timed_online.argv[timed_online.argv.index("--inter-beta") + 1] == "2"
    cached_inter = jobs["cached-inter-600"]  # the online-600 recipe from the cache: what the cache costs at equal updates
    assert cached_inter.charges == ["cache:references-k16-states"]
    assert cached_inter.argv[cached_inter.argv.index("--max-update") + 1] == "600"
    assert cached_inter.argv[cached_inter.argv.index("--inter-beta") + 1] == "2"
    inter = jobs["ref-kd-inter-1200"]  # cached KD with the intermediate loss: the teacher's states are in its cache
    assert inter.charges == ["cache:references-k16-states"] and inter.seconds == jobs["no-kd-1200"].seconds == 1200
    assert inter.argv[inter.argv.index("--inter-beta") + 1] == "2"
    assert jobs["cache:references-k16-states"].argv[-4:] == ["--encoder-states", "all", "--decoder-states", "all"]


def test_a_time_budget_pays_for_its_corpus_and_cache_and_a_partner_gets_its_updates(tmp_path):
    from pet_fairseq.study.runner import time_left

    corpus = script_job(tmp_path, "corpus:c", "import time; time.sleep(0.3)")
    corpus.marker = tmp_path / "corpus:c" / "seqkd.json"  # a corpus job: marker written by the tool itself
    write = f"open(r'{tmp_path / 'corpus:c' / 'seqkd.json'}', 'w').write('{{}}')"
    corpus.argv = [sys.executable, "-c", f"import time; time.sleep(0.3); {write}"]
    argv_dump = "import sys, pathlib; print('num_updates 42'); print(' '.join(sys.argv[1:]))"
    timed = script_job(tmp_path, "timed", f"{argv_dump}; open(r'{tmp_path / 'timed' / 'checkpoint_last.pt'}', 'w')",
                       needs=["corpus:c"])
    timed.seconds, timed.charges = 100.0, ["corpus:c"]
    partner = script_job(tmp_path, "partner", f"{argv_dump}; open(r'{tmp_path / 'partner' / 'checkpoint_last.pt'}', 'w')",
                         needs=["timed"])
    partner.updates_of = "timed"
    assert run_jobs([corpus, timed, partner]) == {"corpus:c": "ok", "timed": "ok", "partner": "ok"}
    corpus_wall = json.loads(corpus.wall_file.read_text())["wall_seconds"]
    assert corpus_wall >= 0.3 and corpus.wall_file.name == "train.wall.json"
    record = json.loads(timed.marker.read_text())
    assert record["paid_seconds"] == corpus_wall and record["budget_seconds"] == 100 and record["updates"] == 42
    hours = float(timed.log.read_text().split("--stop-time-hours ")[1].split()[0])
    assert hours * 3600 == pytest.approx(100 - corpus_wall, abs=0.01)
    assert "--max-update 42" in partner.log.read_text()
    timed.seconds = corpus_wall  # nothing left to train
    with pytest.raises(SpecError, match="nothing is left to train"):
        time_left(timed, {"corpus:c": corpus})


def test_spec_checks_time_budgets_caches_and_partners():
    base = {"budget": 10, "students": {"s": ""}}
    bad = [({"name": "a", "student": "s", "criterion": "ce", "seconds": 0}, "must be positive"),
           ({"name": "a", "student": "s", "criterion": "ce", "cache_k": 8}, "cache_k needs criterion kd"),
           ({"name": "a", "student": "s", "criterion": "kd", "cache_k": 8, "args": "--inter-beta 2"}, "add '--inter-beta 0'"),
           ({"name": "a", "student": "s", "criterion": "kd", "cache_states": True}, "cache_states needs cache_k"),
           ({"name": "a", "student": "s", "criterion": "ce", "updates_of": "a"}, "updates_of must name another variant")]
    for variant, message in bad:
        with pytest.raises(SpecError, match=message):
            parse_spec({**base, "variants": [variant]})
    ok = parse_spec({**base, "variants": [{"name": "a", "student": "s", "criterion": "kd", "cache_k": 8,
                                            "args": "--inter-beta 0 --encoder-layer-map ''"}]})
    assert ok.variants[0].cache_name == "references-k8"
    states = parse_spec({**base, "variants": [{"name": "a", "student": "s", "criterion": "kd", "cache_k": 8,
                                                "cache_states": True, "args": "--inter-beta 2"}]}).variants[0]
    assert states.cache_name == "references-k8-states"  # its own cache: the plain one holds no states


def test_a_variant_with_cache_states_builds_them_and_trains_with_the_intermediate_loss(tmp_path):
    from pet_fairseq.study.runner import cache_dir, plan_jobs

    spec = parse_spec({"budget": 10, "students": {"s": "--arch pet_transformer"}, "variants": [
        {"name": "inter", "student": "s", "criterion": "kd", "cache_k": 8, "cache_states": True},
        {"name": "plain", "student": "s", "criterion": "kd", "cache_k": 8, "args": "--inter-beta 0"}]})
    setup = Setup(tmp_path / "bin", tmp_path / "t.pt", "de", "en", REPO / "pet_fairseq")
    jobs = {j.name: j for j in plan_jobs(spec, setup, tmp_path, Path("fairseq-train"), Path("python"))}
    assert list(jobs) == ["cache:references-k8-states", "inter", "cache:references-k8", "plain"]
    assert jobs["cache:references-k8-states"].argv[-4:] == ["--encoder-states", "all", "--decoder-states", "all"]
    assert "--encoder-states" not in jobs["cache:references-k8"].argv
    argv = jobs["inter"].argv
    assert argv[argv.index("--teacher-cache") + 1] == str(cache_dir(tmp_path, "references-k8-states"))
    assert "--inter-beta" not in argv  # pet_kd's default β with the auto layer maps


def test_update_cost_reads_train_wall_after_the_first_window_and_checks_its_options(tmp_path, capsys):
    from pet_fairseq.study.update_cost import main, mode_args, seconds_per_update

    log = "\n".join(f'2026 | INFO | train_inner | {{"num_updates": "{u}", "train_wall": "{w}"}}'
                    for u, w in ((5, 9.0), (10, 2.0), (15, 3.0)))
    assert seconds_per_update(log) == pytest.approx((2.0 + 3.0) / 10)
    with pytest.raises(ValueError, match="fewer than two"):
        seconds_per_update(log.splitlines()[0])
    cached = mode_args("cached-kd", Path("t.pt"), Path("cache"), ["--kd-alpha", "0.5"])
    assert cached[cached.index("--teacher-cache") + 1] == "cache" and cached[cached.index("--inter-beta") + 1] == "0"
    assert "--teacher-path" not in mode_args("ce", Path("t.pt"), None, [])
    inter = mode_args("cached-kd-inter", Path("t.pt"), Path("cache"), ["--kd-alpha", "0.5"])
    assert inter[inter.index("--teacher-cache") + 1] == "cache" and "--inter-beta" not in inter
    spec = REPO / "configs" / "study" / "multi30k.json"
    common = ["--spec", str(spec), "--data-bin", str(tmp_path), "--teacher", str(tmp_path / "t.pt")]
    assert main(common + ["--modes", "ce,nope"]) == 2 and "unknown nope" in capsys.readouterr().err
    assert main(common) == 2 and "--cache must be a finished teacher cache" in capsys.readouterr().err
    assert main(common + ["--modes", "ce", "--student", "x"]) == 2 and "--student 'x' is not in" in capsys.readouterr().err


def test_converged_spec_stops_runs_on_a_plateau_and_evaluates_the_average(tmp_path):
    spec = load_spec(REPO / "configs" / "study" / "multi30k-converged.json")
    setup = Setup(tmp_path / "bin", tmp_path / "t.pt", "de", "en", REPO / "pet_fairseq")
    argv = train_command(spec, spec.variant("pet-no-kd"), setup, setup.data_bin, tmp_path / "run")
    pairs = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert pairs["--patience"] == "4" and pairs["--best-checkpoint-metric"] == "bleu"
    assert pairs["--save-interval-updates"] == pairs["--validate-interval-updates"] == "250"
    assert pairs["--keep-interval-updates"] == "3" and "--maximize-best-checkpoint-metric" in argv
    assert spec.checkpoint_name() == "checkpoint_avg.pt"
    plain = load_spec(REPO / "configs" / "study" / "multi30k.json")
    assert plain.checkpoint_name() == "checkpoint_last.pt"
    assert "--patience" not in train_command(plain, plain.variants[0], setup, setup.data_bin, tmp_path / "r")
    with pytest.raises(SpecError, match="average_last >= 2"):
        parse_spec({"budget": 10, "students": {"s": ""}, "average_last": 1,
                    "variants": [{"name": "a", "student": "s", "criterion": "ce"}]})


def test_negative_threads_are_refused_before_any_run(tmp_path, capsys):
    """--threads -1 is refused instead of reaching each run as OMP_NUM_THREADS=-1."""
    import signal

    from pet_fairseq.study.cli import main

    (tmp_path / "data").mkdir()
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"a teacher")
    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert main(["--spec", str(tmp_path / "spec.json"), "--data-bin", str(tmp_path / "data"), "--teacher",
                     str(teacher), "--out", str(tmp_path / "out"), "--source-lang", "de", "--target-lang", "en",
                     "--train-only", "--threads", "-1"]) == 2
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert capsys.readouterr().err.splitlines()[-1] == "error: --threads must be at least 0, got -1"
    assert not (tmp_path / "out").exists() and teacher.read_bytes() == b"a teacher"


def test_a_teacher_of_the_other_direction_is_refused_before_any_run(tmp_path, capsys):
    import signal

    from pet_fairseq.study.cli import main
    from tests.conftest import make_checkpoint, toy_dictionary, write_data_dir

    data = write_data_dir(tmp_path / "data", toy_dictionary(40))
    teacher, _, _ = make_checkpoint(tmp_path / "t.pt", data, "transformer", "--encoder-layers", "1", "--decoder-layers",
                                    "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
                                    "--encoder-ffn-embed-dim", "16", "--decoder-ffn-embed-dim", "16")  # de->en
    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert main(["--spec", str(REPO / "configs" / "study" / "multi30k.json"), "--data-bin", str(data), "--teacher",
                     str(teacher), "--out", str(tmp_path / "out"), "--source-lang", "en", "--target-lang", "de",
                     "--train-only"]) == 2
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        f"error: --teacher {teacher} translates de->en, but this run trains en->de")
    assert not (tmp_path / "out").exists()
