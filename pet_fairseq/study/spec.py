"""A study spec: student architectures, seq-KD corpora and variants, and each variant's command line.

A spec is a JSON object::

    {"budget": 276,                       # student updates of every variant
     "curve_points": 4,                   # validations (valid NLL + greedy BLEU) per run
     "common_args": "--optimizer adam ...",
     "students": {"pet": "--arch pet_transformer --encoder-layer-plan 0,1,0~,1~ ..."},
     "corpora": {"seqkd": {"engine": "ctranslate2", "beam": 5, "compute_type": "float32"}},
     "variants": [{"name": "no-kd", "label": "no KD", "student": "pet", "criterion": "ce", "seed": 1},
                  {"name": "seqkd+kd", "student": "pet", "criterion": "kd", "corpus": "seqkd",
                   "args": "--kd-alpha 0.5 --kd-temperature 1"}]}

``criterion`` is ``ce`` (label-smoothed cross-entropy, plain translation task) or ``kd``
(``--task pet_distillation --criterion pet_kd`` with the study's teacher); ``corpus`` trains on a
sequence-level KD data-bin made by :mod:`pet_fairseq.seqkd` instead of the references.

Budgets: every variant trains for ``budget`` updates unless it sets its own ``budget``. A variant
with ``seconds`` has a **wall-time budget** that includes every stage it pays for (its corpus and
its teacher cache, each charged in full to every variant that uses it): its training gets what is
left (fairseq's ``--stop-time-hours``) and its update budget is only a guard. A variant with
``updates_of`` waits for that variant and trains for as many updates as it made (the equal-updates
partner of a wall-time run). ``cache_k`` trains
with the teacher's top-k distributions cached on the variant's data (:mod:`pet_fairseq.kdcache`,
``--teacher-cache``) instead of running the teacher in every update; such a variant turns the
intermediate loss off (``--inter-beta 0`` in its ``args``) unless it sets ``cache_states``, whose cache
also holds the teacher's hidden states of every layer (``--encoder-states all --decoder-states all``),
which the intermediate loss then reads.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional

from pet_fairseq.core.errors import PetError

CRITERIA = ("ce", "kd")


class SpecError(PetError, ValueError):
    """A spec that cannot be run; the message names the entry and the fix."""


@dataclass(frozen=True)
class Corpus:
    """Options of one sequence-level KD corpus (``python -m pet_fairseq.seqkd``)."""

    name: str
    engine: str = "ctranslate2"
    beam: int = 5
    compute_type: str = "float32"
    args: str = ""


@dataclass(frozen=True)
class Variant:
    """One student run: architecture, criterion, training data and extra fairseq-train options."""

    name: str
    student: str
    criterion: str
    label: str = ""
    corpus: Optional[str] = None
    seed: int = 1
    args: str = ""
    budget: Optional[int] = None  # updates (a guard when ``seconds`` is set); default: the spec's
    seconds: Optional[float] = None  # wall-time budget, corpus and cache included
    cache_k: Optional[int] = None  # train on the teacher's cached top-k instead of running the teacher
    cache_states: bool = False  # the cache holds the teacher's hidden states too (for the intermediate loss)
    updates_of: Optional[str] = None  # train for as many updates as this other variant made (it runs first)

    @property
    def title(self) -> str:
        return self.label or self.name

    @property
    def cache_name(self) -> Optional[str]:
        """The teacher cache this variant trains with: ``<corpus or references>-k<k>[-states]``, or None."""
        if not self.cache_k:
            return None
        return f"{self.corpus or 'references'}-k{self.cache_k}" + ("-states" if self.cache_states else "")


@dataclass(frozen=True)
class Spec:
    budget: int
    students: Dict[str, str]
    variants: List[Variant]
    corpora: Dict[str, Corpus] = field(default_factory=dict)
    common_args: str = ""
    curve_points: int = 4
    validate_interval: Optional[int] = None  # updates between validations (default: budget / curve_points)
    patience: Optional[int] = None  # stop a run after this many validations without a better valid BLEU
    average_last: Optional[int] = None  # evaluate the average of the last N validated checkpoints

    def checkpoint_name(self) -> str:
        """The checkpoint of a finished run that the table evaluates."""
        if self.average_last:
            return "checkpoint_avg.pt"
        return "checkpoint_best.pt" if self.patience else "checkpoint_last.pt"

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise SpecError(f"no variant named {name!r}; the spec has {', '.join(v.name for v in self.variants)}")


def _build(cls, entry: dict, where: str):
    """``cls(**entry)``, with an error naming unknown or missing keys."""
    if not isinstance(entry, dict):
        raise SpecError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    try:
        return cls(**entry)
    except TypeError as err:
        raise SpecError(f"{where}: {err}") from err


def _option(args: str, name: str) -> Optional[str]:
    """The value given to ``name`` in a shell-quoted argument string (the last one wins), or None."""
    tokens = shlex.split(args)
    values = [tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == name]
    return values[-1] if values else None


def parse_spec(data: dict, origin: str = "spec") -> Spec:
    """Check a spec's structure and cross-references; raise :class:`SpecError` on the first problem."""
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: a spec is a JSON object")
    data = dict(data)
    corpora = {name: _build(Corpus, {"name": name, **entry}, f"{origin}: corpora.{name}")
               for name, entry in (data.pop("corpora", None) or {}).items()}
    variants = [_build(Variant, entry, f"{origin}: variants[{i}]") for i, entry in enumerate(data.pop("variants", []))]
    spec = _build(Spec, {**data, "variants": variants, "corpora": corpora}, origin)
    if spec.budget < 1 or spec.curve_points < 1:
        raise SpecError(f"{origin}: budget and curve_points must be >= 1 (got {spec.budget}, {spec.curve_points})")
    if not variants:
        raise SpecError(f"{origin}: no variants declared")
    names = [v.name for v in variants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"{origin}: variant name(s) {', '.join(duplicates)} declared more than once")
    for v in variants:
        if v.criterion not in CRITERIA:
            raise SpecError(f"{origin}: variant {v.name}: criterion must be one of {', '.join(CRITERIA)}, not {v.criterion!r}")
        if v.student not in spec.students:
            raise SpecError(f"{origin}: variant {v.name}: unknown student {v.student!r}; declared: {', '.join(spec.students)}")
        if v.corpus is not None and v.corpus not in corpora:
            raise SpecError(f"{origin}: variant {v.name}: unknown corpus {v.corpus!r}; declared: {', '.join(corpora) or 'none'}")
        if (v.budget is not None and v.budget < 1) or (v.seconds is not None and v.seconds <= 0) or \
                (v.cache_k is not None and v.cache_k < 1):
            raise SpecError(f"{origin}: variant {v.name}: budget, seconds and cache_k must be positive "
                            f"(got {v.budget}, {v.seconds}, {v.cache_k})")
        if v.cache_k is not None and v.criterion != "kd":
            raise SpecError(f"{origin}: variant {v.name}: cache_k needs criterion kd (a CE run uses no teacher)")
        if v.cache_states and v.cache_k is None:
            raise SpecError(f"{origin}: variant {v.name}: cache_states needs cache_k (the states are part of the cache)")
        if v.cache_k is not None and not v.cache_states and _option(v.args, "--inter-beta") not in ("0", "0.0"):
            raise SpecError(f"{origin}: variant {v.name}: its cache holds no hidden states; add '--inter-beta 0' "
                            "(and empty layer maps) to its args, or set \"cache_states\": true")
        if v.updates_of is not None and (v.updates_of == v.name or v.updates_of not in names):
            raise SpecError(f"{origin}: variant {v.name}: updates_of must name another variant of the spec, not "
                            f"{v.updates_of!r}")
    if (spec.patience is not None and spec.patience < 1) or (spec.average_last is not None and spec.average_last < 2):
        raise SpecError(f"{origin}: patience must be >= 1 and average_last >= 2 (got {spec.patience}, {spec.average_last})")
    if spec.validate_interval is not None and spec.validate_interval < 1:
        raise SpecError(f"{origin}: validate_interval must be >= 1 (got {spec.validate_interval})")
    return spec


def load_spec(path: Path) -> Spec:
    """Read and check the spec at ``path``."""
    if not path.is_file():
        raise SpecError(f"study spec {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SpecError(f"{path} is not valid JSON: {err}") from err
    return parse_spec(data, str(path))


@dataclass(frozen=True)
class Setup:
    """Where a study's inputs are: data-bin, teacher, language pair, BPE marker, user dir."""

    data_bin: Path
    teacher: Path
    source_lang: str
    target_lang: str
    user_dir: Path
    remove_bpe: Optional[str] = "subword_nmt"  # fairseq's --eval-bleu-remove-bpe; None: the data has no BPE


def validation_args(spec: Spec, setup: Setup) -> List[str]:
    """Validate ``curve_points`` times per run (or every ``validate_interval`` updates), with greedy BLEU on
    the valid split (learning curves)."""
    detok = {"source_lang": setup.source_lang, "target_lang": setup.target_lang}
    interval = spec.validate_interval or max(1, spec.budget // spec.curve_points)
    plateau = []
    if spec.patience or spec.average_last:  # keep the validated checkpoints: the best one, the last N to average
        plateau = ["--save-interval-updates", str(interval), "--keep-interval-updates", str(spec.average_last or 1),
                   "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric"]
    if spec.patience:
        plateau += ["--patience", str(spec.patience)]
    return plateau + [
        "--validate-interval-updates", str(interval), "--validate-interval", "1000000",
        "--save-interval", "1000000", "--no-epoch-checkpoints", "--eval-bleu",
    ] + (["--eval-bleu-remove-bpe", setup.remove_bpe] if setup.remove_bpe else []) + [
        "--eval-bleu-args", json.dumps({"beam": 1, "max_len_a": 1.2, "max_len_b": 10}),
        "--eval-bleu-detok", "moses", "--eval-bleu-detok-args", json.dumps(detok),
        "--log-format", "simple", "--log-interval", "20",
    ]


def train_command(spec: Spec, variant: Variant, setup: Setup, data_bin: Path, save_dir: Path,
                  cache: Optional[Path] = None) -> List[str]:
    """The ``fairseq-train`` arguments (without the program) of ``variant``; ``cache``: its teacher cache folder.

    A wall-time budget is not part of it: the runner adds ``--stop-time-hours`` when the run starts,
    once the time its corpus and cache took is known.
    """
    if variant.criterion == "kd":
        objective = ["--task", "pet_distillation", "--teacher-path", str(setup.teacher), "--criterion", "pet_kd"]
        if variant.cache_k:
            if cache is None:
                raise SpecError(f"variant {variant.name} trains with a teacher cache: pass its folder")
            objective += ["--teacher-cache", str(cache)]
    else:
        objective = ["--task", "translation", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]
    return (
        [str(data_bin), "--user-dir", str(setup.user_dir), "--source-lang", setup.source_lang,
         "--target-lang", setup.target_lang, "--save-dir", str(save_dir)]
        + objective + shlex.split(spec.students[variant.student]) + shlex.split(spec.common_args)
        + ["--max-update", str(variant.budget or spec.budget), "--seed", str(variant.seed)]
        + validation_args(spec, setup) + shlex.split(variant.args)
    )


#: the pet-kdcache options that store the teacher's hidden states after every layer
ALL_STATES = ("--encoder-states", "all", "--decoder-states", "all")


def cache_command(setup: Setup, data_bin: Path, k: int, out: Path, states: bool = False) -> List[str]:
    """The ``python -m pet_fairseq.kdcache`` arguments (without the interpreter) of a top-``k`` cache of ``data_bin``,
    with the teacher's hidden states of every layer when ``states``."""
    return (["-m", "pet_fairseq.kdcache", str(data_bin), "--teacher", str(setup.teacher), "--out", str(out),
             "--source-lang", setup.source_lang, "--target-lang", setup.target_lang, "--k", str(k)]
            + (list(ALL_STATES) if states else []))


def seqkd_command(corpus: Corpus, setup: Setup, out: Path) -> List[str]:
    """The ``python -m pet_fairseq.seqkd`` arguments (without the interpreter) of ``corpus``."""
    return (["-m", "pet_fairseq.seqkd", str(setup.data_bin), "--teacher", str(setup.teacher), "--out", str(out),
             "--source-lang", setup.source_lang, "--target-lang", setup.target_lang, "--engine", corpus.engine,
             "--beam", str(corpus.beam), "--compute-type", corpus.compute_type] + shlex.split(corpus.args))
