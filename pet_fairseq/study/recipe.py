"""PET recipe on a binarized dataset: teacher -> sequence-level KD corpus -> teacher cache -> student
distilled with word-level KD (and optionally PET's warm-up phase), all in one budget of student updates.

    pet-recipe --data-bin DIR --out DIR [--teacher CKPT] [options]
    (also: python -m pet_fairseq.study.recipe, bash scripts/train_pet.sh)

Stages (a finished stage is reused, so an interrupted recipe resumes and the teacher is cached):
  1. teacher  fairseq-train --arch --teacher-arch until its validation stops improving (fairseq's --patience
              over validations every --teacher-validate-every updates; --teacher-max-update is the guard),
              unless --teacher CKPT is given; reports where it stopped (OUT/teacher/plateau.json)  -> OUT/teacher
  2. corpus   python -m pet_fairseq.seqkd: the training split re-targeted with the teacher's beam-search
              output, same dictionaries (--seqkd none skips it)                                    -> OUT/seqkd
  3. cache    python -m pet_fairseq.kdcache: the teacher's top-k distributions on that corpus, computed once
              (--kd-mode cached, the default; --kd-mode online runs the teacher in every update)   -> OUT/cache
  4. student  fairseq-train --task pet_distillation --criterion pet_kd for --student-updates updates; the
              first --warmup-fraction of them train on PET's simplified targets                     -> OUT/student
Each stage is a job of the study's runner (pet_fairseq.study.runner): it records its command (OUT/teacher/
command.txt, OUT/seqkd.command.txt, OUT/cache.command.txt, OUT/student/command.txt) and, once finished, its
wall time (OUT/STAGE/.done, OUT/seqkd.wall.json, OUT/cache.wall.json). A rerun with other options refuses
(naming them) unless --force, except a larger --student-updates, which resumes the student to the new count.
The KD options are pet_kd's defaults (chosen by the study in README.md); --kd-args overrides them.
Optimiser defaults are the paper's IWSLT'14 settings (Adam 0.9/0.98, lr 5e-4, inverse_sqrt with 4000
warm-up updates, dropout 0.3, weight decay 1e-4, label smoothing 0.1, 4096 tokens).
The tools' output goes to each stage's log (OUT/STAGE/train.log, OUT/seqkd.log, OUT/cache.log); the console
shows the stages and a progress line per minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from pet_fairseq.core.arguments import add_language_args
from pet_fairseq.core.cli import command
from pet_fairseq.core.errors import ConfigError, PetError
from pet_fairseq.core.files import infer_pair, write_json_atomic
from pet_fairseq.core.plateau import average_last, stop_report, summary_line
from pet_fairseq.study.runner import PROGRESS_EVERY, Job, command_file, run_jobs
from pet_fairseq.study.spec import ALL_STATES
from pet_fairseq.study.teacher import check_teacher

logger = logging.getLogger("pet_fairseq.study.recipe")
USER_DIR = Path(__file__).resolve().parents[1]
SEQKD_ENGINES = ("ctranslate2", "fairseq", "none")
KD_MODES = ("cached", "online")
TEACHER_METRICS = ("bleu", "loss")
#: what a refusal of a changed stage suggests
FIX = "pass --force to redo every stage, choose another --out, or rerun with the same options"
#: what --force removes under --out (the stages, their records, logs and wall times)
STAGE_PATHS = ("teacher", "seqkd", "seqkd.shards", "seqkd.command.txt", "seqkd.log", "seqkd.wall.json", "cache",
               "cache.command.txt", "cache.log", "cache.wall.json", "student", "teacher.failed.log", "student.failed.log")
#: (option, smallest value) of the integer options; each is kept as given, as the stages' records hold it
INTEGERS = (("--student-updates", 1), ("--max-tokens", 1), ("--warmup-updates", 0), ("--teacher-patience", 0),
            ("--teacher-validate-every", 0), ("--teacher-average", 0), ("--cache-k", 1))
BUDGETS = ("--student-updates", "--teacher-max-update", "--teacher-max-epoch")


class StageFailed(Exception):
    """A stage's tool failed: exit status 2 when the tool refused its input (its ``error:`` line is in the stage's
    log, shown with the log's last lines), 1 otherwise, as a training run that crashes."""

    def __init__(self, message: str, exit_status: int = 1):
        super().__init__(message)
        self.exit_status = exit_status


class _TeacherBudget(argparse.Action):
    """``--teacher-max-update N`` / ``--teacher-max-epoch N``: one budget, the last one given wins."""

    def __call__(self, parser, namespace, values, option_string=None):
        flag = "--max-update" if option_string == "--teacher-max-update" else "--max-epoch"
        setattr(namespace, self.dest, (option_string, flag, values))


class _Gone(argparse.Action):
    """An option of the recipe's epoch-based warm-up, which is gone: refused with what replaces it."""

    def __call__(self, parser, namespace, values, option_string=None):
        raise ConfigError(f"{option_string} is gone: the warm-up is now a phase of the student's run; use "
                          "--student-updates N and --warmup-fraction F (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pet-recipe", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("data and output")
    io.add_argument("--data-bin", metavar="DIR", help="binarized data (fairseq-preprocess output) [required]")
    io.add_argument("--out", metavar="DIR", help="where teacher/, seqkd/, cache/ and student/ go [required]")
    io.add_argument("--force", action="store_true",
                    help="rerun every stage from scratch (removes OUT/teacher, seqkd, cache, student)")
    add_language_args(p, note="the direction, passed to every stage so that every checkpoint records it; without them,\n"
                              "the data-bin's only pair (pass both or neither)")
    t = p.add_argument_group("teacher")
    t.add_argument("--teacher", metavar="CKPT", help="use this trained teacher instead of training one")
    t.add_argument("--teacher-only", action="store_true", help="stop after the teacher stage")
    t.add_argument("--teacher-arch", metavar="A", default="transformer_iwslt_de_en",
                   help="architecture of a teacher trained here (default: %(default)s)")
    for option, unit in (("--teacher-max-update", "updates"), ("--teacher-max-epoch", "epochs")):
        t.add_argument(option, metavar="N", dest="teacher_budget", action=_TeacherBudget,
                       default=("--teacher-max-epoch", "--max-epoch", "50"),
                       help=f"the teacher's largest budget in {unit}, the guard of its plateau stopping"
                            + ("" if unit == "updates" else "; the last of the two given counts (default: 50 epochs)"))
    t.add_argument("--teacher-patience", metavar="N", default="5",
                   help="stop the teacher after N validations without a better --teacher-metric (default: %(default)s; "
                        "0 = off)")
    t.add_argument("--teacher-validate-every", metavar="N", default="0",
                   help="updates between the teacher's validations (default: every epoch)")
    t.add_argument("--teacher-metric", metavar="M", default="bleu",
                   help="bleu (greedy valid BLEU, the default) or loss (valid loss, no decoding)")
    t.add_argument("--teacher-average", metavar="N", default="0",
                   help="use the average of the teacher's last N validated checkpoints (needs --teacher-validate-every; "
                        "0 = checkpoint_best.pt)")
    t.add_argument("--teacher-args", metavar='"..."', default="", help="extra fairseq-train arguments for the teacher")
    s = p.add_argument_group("student")
    s.add_argument("--student-arch", metavar="A", default="pet_iwslt_de_en", help="student architecture (default: %(default)s)")
    s.add_argument("--student-updates", metavar="N", default="50000",
                   help="the student's whole budget in updates, warm-up included (default: %(default)s)")
    s.add_argument("--warmup-fraction", metavar="F", default=None,
                   help="share of --student-updates spent on the warm-up phase (default: pet_kd's)")
    s.add_argument("--student-args", metavar='"..."', default="",
                   help="extra fairseq-train arguments for the student (e.g. layer plans)")
    k = p.add_argument_group("distillation")
    k.add_argument("--seqkd", metavar="ENGINE", default="ctranslate2",
                   help="ctranslate2 (default, fast), fairseq, or none (train on the references)")
    k.add_argument("--seqkd-args", metavar='"..."', default="",
                   help="extra options of python -m pet_fairseq.seqkd (e.g. --beam 1, --compute-type int8)")
    k.add_argument("--kd-mode", metavar="MODE", default="cached",
                   help="cached (default: the teacher's top-k computed once, no teacher in the loop, no intermediate "
                        "loss unless --cache-states) or online (the teacher runs in every update)")
    k.add_argument("--cache-k", metavar="K", default="16", help="tokens per position in the teacher cache (default: %(default)s)")
    k.add_argument("--cache-states", action="store_true",
                   help="--kd-mode cached: cache the teacher's hidden states of every layer too, so that the student "
                        "trains with the intermediate-layer loss and still without the teacher in the loop (disk: "
                        "2 x teacher width bytes per token and layer)")
    k.add_argument("--kd-args", metavar='"..."', default="",
                   help="extra pet_kd options (e.g. --kd-alpha 0.1 --kd-temperature 10 --inter-beta 50)")
    o = p.add_argument_group("optimisation (teacher and student)")
    o.add_argument("--max-tokens", metavar="N", default="4096", help="tokens per batch (default: %(default)s)")
    o.add_argument("--lr", metavar="X", default="5e-4", help="peak learning rate (default: %(default)s)")
    o.add_argument("--warmup-updates", metavar="N", default="4000", help="learning-rate warm-up (default: %(default)s)")
    o.add_argument("--dropout", metavar="X", default="0.3", help="(default: %(default)s)")
    o.add_argument("--cpu", action="store_true", help="train on CPU")
    for gone in ("--warmup-epochs", "--kd-max-update", "--kd-max-epoch", "--warmup-args"):
        p.add_argument(gone, nargs="?", action=_Gone, help=argparse.SUPPRESS)
    return p


def _bind_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> List[str]:
    """``--option VALUE`` as ``--option=VALUE``, so that a value starting with ``-`` (``--seqkd-args "--beam=2"``,
    ``--student-updates -5``) is the option's value, as in the recipe's bash version, rather than an option."""
    takes_value = {name for action in parser._actions if action.nargs is None for name in action.option_strings}
    bound, i = [], 0
    while i < len(argv):
        if argv[i] in takes_value and i + 1 < len(argv):
            bound.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            bound.append(argv[i])
            i += 1
    return bound


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    return parser.parse_args(_bind_values(parser, list(sys.argv[1:] if argv is None else argv)))


def _one_of(values: Sequence[str]) -> str:
    return ", ".join(values[:-1]) + " or " + values[-1]


def _integer(option: str, value: str, minimum: int) -> None:
    if not re.fullmatch(r"[0-9]+", value) or int(value) < minimum:
        why = " (fairseq reads 0 updates as 'no limit')" if option in BUDGETS else ""
        raise ConfigError(f"{option} must be an integer >= {minimum}, not '{value}'{why}")


def _real(option: str, value: Optional[str], low: float, high: Optional[float], bounds: str) -> None:
    """``value`` (a string, None when not given) must be a number with low < value (--lr) or low <= value < high."""
    if value is None:
        return
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    inside = number > low if high is None else low <= number < high
    if not inside:  # NaN fails both comparisons
        raise ConfigError(f"{option} must be a number {bounds}, not '{value}'")


def check_options(args: argparse.Namespace) -> None:
    """The options' values, before anything is read or run."""
    for option, allowed in (("--seqkd", SEQKD_ENGINES), ("--kd-mode", KD_MODES), ("--teacher-metric", TEACHER_METRICS)):
        value = getattr(args, option[2:].replace("-", "_"))
        if value not in allowed:
            raise ConfigError(f"{option} must be {_one_of(allowed)}, not '{value}'")
    if args.cache_states and args.kd_mode != "cached":
        raise ConfigError(f"--cache-states fills the teacher cache of --kd-mode cached; --kd-mode {args.kd_mode} has none")
    for option, minimum in INTEGERS:
        _integer(option, getattr(args, option[2:].replace("-", "_")), minimum)
    _integer(args.teacher_budget[0], args.teacher_budget[2], 1)
    for option, low, high, bounds in (("--lr", 0.0, None, "> 0"), ("--dropout", 0.0, 1.0, "in [0, 1)"),
                                      ("--warmup-fraction", 0.0, 1.0, "in [0, 1)")):
        _real(option, getattr(args, option[2:].replace("-", "_")), low, high, bounds)
    if not args.data_bin or not args.out:
        raise ConfigError("--data-bin and --out are required (see --help)")
    if not args.teacher and int(args.teacher_average) > 1 and int(args.teacher_validate_every) == 0:
        raise ConfigError(f"--teacher-average {args.teacher_average} averages the teacher's last validated checkpoints, "
                          "which only --teacher-validate-every N keeps: pass it too")


@dataclass(frozen=True)
class Inputs:
    """Where the recipe reads and writes, its language pair and the programs its stages run."""

    data: Path
    out: Path
    pair: Optional[Tuple[str, str]]  # None: neither given nor the data-bin's only pair (fairseq infers it)
    fairseq_train: Path
    python: Path
    user_dir: Path = USER_DIR

    @property
    def langs(self) -> List[str]:
        return ["--source-lang", self.pair[0], "--target-lang", self.pair[1]] if self.pair else []


def resolve_inputs(args: argparse.Namespace, bin_dir: Path) -> Inputs:
    """Check the paths and the language pair; paths stay as given (relative ones too), as the records hold them."""
    data = Path(args.data_bin)
    if not data.is_dir():
        raise ConfigError(f"--data-bin {args.data_bin} is not a folder; binarize your data first "
                          "(bash data_prep/prepare-<dataset>.sh)")
    fairseq_train = bin_dir / "fairseq-train"
    if not os.access(fairseq_train, os.X_OK):
        raise ConfigError(f"{fairseq_train} not found; run: bash scripts/install.sh")
    if args.teacher and not Path(args.teacher).is_file():
        raise ConfigError(f"--teacher {args.teacher} does not exist")
    out = Path(args.out)
    blocker = next((p for p in (out, *out.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"--out {out}: {blocker} is a file, not a folder; choose another --out")
    if bool(args.source_lang) != bool(args.target_lang):
        raise ConfigError("pass both --source-lang and --target-lang (or neither: the data-bin's pair)")
    pair = (args.source_lang, args.target_lang) if args.source_lang else None
    if pair is None:
        try:  # every stage gets the pair, so every checkpoint records its direction (fairseq infers it but saves None)
            pair = infer_pair(data, "train")
        except ConfigError:
            pair = None
    return Inputs(data, out, pair, fairseq_train, Path(sys.executable))


def optimizer_args(args: argparse.Namespace) -> List[str]:
    """The paper's IWSLT'14 optimisation, the teacher's and the student's."""
    return ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", args.lr, "--lr-scheduler", "inverse_sqrt",
            "--warmup-updates", args.warmup_updates, "--warmup-init-lr", "1e-07", "--weight-decay", "0.0001",
            "--clip-norm", "0.0", "--dropout", args.dropout, "--max-tokens", args.max_tokens, "--log-format", "simple",
            "--log-interval", "20", "--no-epoch-checkpoints"] + (["--cpu"] if args.cpu else [])


def plateau_args(args: argparse.Namespace, inputs: Inputs) -> List[str]:
    """Plateau stopping: validate every N updates (or every epoch), keep the validated checkpoints, stop after
    --teacher-patience validations without a better metric; the budget is only the guard."""
    found: List[str] = []
    every = args.teacher_validate_every
    if int(every) > 0:
        found += ["--validate-interval-updates", every, "--save-interval-updates", every, "--validate-interval", "1000000",
                  "--save-interval", "1000000", "--keep-interval-updates", str(max(int(args.teacher_average), 1))]
    if int(args.teacher_patience) > 0:
        found += ["--patience", args.teacher_patience]
    if args.teacher_metric == "bleu":
        remove_bpe: List[str] = []
        if (inputs.data / "bpe.code").is_file():
            remove_bpe = ["--eval-bleu-remove-bpe", "subword_nmt"]
        elif any(inputs.data.glob("*.model")):
            remove_bpe = ["--eval-bleu-remove-bpe", "sentencepiece"]
        src, tgt = inputs.pair or ("", "")
        found += ["--eval-bleu", *remove_bpe, "--eval-bleu-args", json.dumps({"beam": 1, "max_len_a": 1.2, "max_len_b": 10}),
                  "--eval-bleu-detok", "moses", "--eval-bleu-detok-args", json.dumps({"source_lang": src, "target_lang": tgt}),
                  "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric"]
    return found


def _train_job(name: str, inputs: Inputs, data: Path, options: List[str], about: str, resumable: bool = False) -> Job:
    """A fairseq-train stage in OUT/NAME. Its record (OUT/NAME/command.txt) holds the data, the pair and the options;
    one without the pair (written by the recipe's bash version) is the same command."""
    save = inputs.out / name
    return Job(name, [str(inputs.fairseq_train), str(data), "--save-dir", str(save), *inputs.langs, *options], save,
               save / ".done", save / "train.log", record=save / "command.txt",
               recorded=[str(data), *inputs.langs, *options], accepts=[[str(data), *options]] if inputs.langs else [],
               resumable=resumable, title=f"the {name} stage in {save}", fix=FIX, about=f"{about} -> {save}",
               checkpoint=True)


def teacher_job(args: argparse.Namespace, inputs: Inputs) -> Job:
    options = ["--arch", args.teacher_arch, *optimizer_args(args), *args.teacher_budget[1:], "--criterion",
               "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--user-dir", str(inputs.user_dir),
               *plateau_args(args, inputs), *shlex.split(args.teacher_args)]
    return _train_job("teacher", inputs, inputs.data, options, f"training {args.teacher_arch}")


def teacher_checkpoint(save: Path, average: int) -> Path:
    """The teacher a trained teacher stage gives: the average, else the best validated checkpoint, else the last."""
    if average > 1:
        return save / "checkpoint_avg.pt"
    best = save / "checkpoint_best.pt"
    return best if best.is_file() else save / "checkpoint_last.pt"


def corpus_job(args: argparse.Namespace, inputs: Inputs, teacher: Path, device: str) -> Job:
    """The seq-KD corpus in OUT/seqkd; the device is not part of its record."""
    out = inputs.out / "seqkd"
    options = ["--teacher", str(teacher), "--engine", args.seqkd, *inputs.langs, *shlex.split(args.seqkd_args)]
    argv = [str(inputs.python), "-m", "pet_fairseq.seqkd", str(inputs.data), "--teacher", str(teacher), "--out", str(out),
            "--engine", args.seqkd, "--device", device, *inputs.langs, *shlex.split(args.seqkd_args)]
    return Job("corpus", argv, out, out / "seqkd.json", inputs.out / "seqkd.log", record=inputs.out / "seqkd.command.txt",
               recorded=[str(inputs.data), *options], accepts=[options], title=f"the corpus stage in {out}", fix=FIX,
               about=f"the training split decoded by the teacher ({args.seqkd}) -> {out}", checkpoint=False)


def cache_job(args: argparse.Namespace, inputs: Inputs, data: Path, teacher: Path) -> Job:
    """The teacher cache in OUT/cache; its record is the corpus, the teacher and k (the cache's own fingerprint checks
    the files when the student starts)."""
    out = inputs.out / "cache"
    states = list(ALL_STATES) if args.cache_states else []
    argv = [str(inputs.python), "-m", "pet_fairseq.kdcache", str(data), "--teacher", str(teacher), "--out", str(out),
            "--k", args.cache_k, *inputs.langs, *states]
    return Job("cache", argv, out, out / "cache.json", inputs.out / "cache.log", record=inputs.out / "cache.command.txt",
               recorded=[str(data), str(teacher), args.cache_k, *states], title=f"the cache stage in {out}", fix=FIX,
               about=f"the teacher's top-{args.cache_k} distributions on {data} -> {out}", checkpoint=False)


def student_job(args: argparse.Namespace, inputs: Inputs, data: Path, teacher: Path, cache: Optional[Path]) -> Job:
    """The student; a larger --student-updates resumes it (fairseq continues from its checkpoint_last.pt)."""
    no_inter = [] if args.cache_states else ["--inter-beta", "0", "--encoder-layer-map", "", "--decoder-layer-map", ""]
    cached = ["--teacher-cache", str(cache), *no_inter] if cache is not None else []
    options = ["--user-dir", str(inputs.user_dir), "--task", "pet_distillation", "--teacher-path", str(teacher),
               "--criterion", "pet_kd", "--arch", args.student_arch, *optimizer_args(args), "--max-update",
               args.student_updates, *(["--warmup-fraction", args.warmup_fraction] if args.warmup_fraction is not None else []),
               *cached, *shlex.split(args.student_args), *shlex.split(args.kd_args)]
    return _train_job("student", inputs, data, options, f"training {args.student_arch} for {args.student_updates} updates",
                      resumable=True)


def distillation_jobs(args: argparse.Namespace, inputs: Inputs, teacher: Path, device: str = "cpu") -> List[Job]:
    """The stages after the teacher, in order: corpus (unless --seqkd none), cache (--kd-mode cached), student."""
    jobs, data, cache = [], inputs.data, None
    if args.seqkd != "none":
        jobs.append(corpus_job(args, inputs, teacher, device))
        data = jobs[-1].output
    if args.kd_mode == "cached":
        jobs.append(cache_job(args, inputs, data, teacher))
        cache = jobs[-1].output
    return jobs + [student_job(args, inputs, data, teacher, cache)]


def seqkd_device(cpu: bool) -> str:
    """Where the corpus is decoded: cuda when there is a GPU, unless --cpu."""
    if cpu:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def remove_stages(out: Path, teacher: Optional[str]) -> None:
    """--force: remove every stage under ``out``, but never the --teacher checkpoint the recipe was given."""
    doomed = [out / name for name in STAGE_PATHS]
    if teacher:
        given = Path(teacher).resolve()
        inside = [p for p in doomed if p.exists() and (p.resolve() == given or p.resolve() in given.parents)]
        if inside:
            raise ConfigError(f"--force would remove --teacher {teacher} (it is under {inside[0]}); copy it elsewhere first")
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _last_lines(path: Path, count: int) -> List[str]:
    if not path.is_file():
        return []
    lines = re.split(r"[\r\n]", path.read_text(encoding="utf-8", errors="replace"))
    return [line for line in lines if line.strip()][-count:]


def _failed(job: Job, created: bool) -> StageFailed:
    """What a failed stage leaves: its log's last lines on the console; a save dir this run created and the run left
    without a checkpoint (nothing but its log and record) is removed, its log kept as OUT/STAGE.failed.log."""
    for line in _last_lines(job.log, 5):
        print(line, file=sys.stderr)
    code = 2 if job.exit_status == 2 else 1
    if job.is_corpus:
        return StageFailed(f"the {job.name} stage failed (log: {job.log})", code)
    left = {p.name for p in job.output.iterdir()} - {job.log.name, command_file(job).name} if job.output.is_dir() else {""}
    if created and not left:
        kept = job.output.with_name(job.output.name + ".failed.log")
        if job.log.is_file():
            job.log.replace(kept)
        shutil.rmtree(job.output)
        return StageFailed(f"{job.name} failed before writing a checkpoint; removed its empty save dir {job.output} "
                           f"(log: {kept})", code)
    return StageFailed(f"{job.name} produced no checkpoint (see {job.log})", code)


def run_stage(job: Job) -> str:
    """Run one stage with the study's runner, or reuse it; returns ``cached`` or ``ok``, raises :class:`StageFailed`."""
    created = not job.output.exists()
    status = run_jobs([job], threads=None, report_every=PROGRESS_EVERY)[job.name]
    if status == "cached":
        where = job.marker if not job.is_corpus else job.output
        extra = " (checked against the teacher and the corpus when the student starts)" if job.name == "cache" else ""
        logger.info("%s: reusing %s%s", job.name, where, extra)
    elif status != "ok":
        raise _failed(job, created)
    elif job.is_corpus:  # the tool's summary (sentences written, the teacher's mass kept), its last line
        for line in _last_lines(job.log, 1):
            logger.info("%s: %s", job.name, line)
    return status


def finish_teacher(args: argparse.Namespace, save: Path, ran: bool) -> Path:
    """The teacher checkpoint of a teacher stage (averaged when asked), and where the teacher stopped."""
    average = int(args.teacher_average)
    teacher = teacher_checkpoint(save, average)
    if average > 1 and (ran or not teacher.is_file()):
        found = average_last(save, average, teacher)
        logger.info("teacher: averaged %s -> %s", ", ".join(p.name for p in found), teacher)
    try:
        report = stop_report((save / "train.log").read_text(encoding="utf-8"), args.teacher_metric)
    except (OSError, PetError) as err:
        logger.warning("teacher: no plateau report (%s)", err)
    else:
        write_json_atomic(save / "plateau.json", report)
        logger.info("teacher: %s", summary_line(report))
    return teacher


def run(args: argparse.Namespace, bin_dir: Optional[Path] = None) -> int:
    check_options(args)
    inputs = resolve_inputs(args, bin_dir or Path(sys.executable).parent)
    if args.force:
        remove_stages(inputs.out, args.teacher)
    if args.teacher:
        check_teacher(Path(args.teacher), inputs.pair)
    if args.teacher:
        teacher = Path(args.teacher)
    else:
        job = teacher_job(args, inputs)
        teacher = finish_teacher(args, job.output, run_stage(job) == "ok")
    logger.info("teacher: %s", teacher)
    if args.teacher_only:
        return 0
    device = seqkd_device(args.cpu) if args.seqkd != "none" else "cpu"
    for job in distillation_jobs(args, inputs, teacher, device):
        run_stage(job)
    logger.info("student: %s", inputs.out / "student" / "checkpoint_last.pt")
    return 0


@command("recipe")
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # lets the runner stop the stage it runs
    try:
        return run(args)
    except StageFailed as failed:
        print(f"error: {failed}", file=sys.stderr, flush=True)
        return failed.exit_status


if __name__ == "__main__":
    sys.exit(main())
