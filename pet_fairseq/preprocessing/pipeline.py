"""Dataset recipes (IWSLT'14 de-en, WMT'14 en-de, Multi30k de-en): raw text to BPE'd text.

Output layout under ``--out`` (fairseq-preprocess then writes ``data-bin/``)::

    tok/{train,valid,test}.{src,tgt}   tokenized (and lowercased where the recipe says so)
    bpe/{train,valid,test}.{src,tgt}   subword-segmented text, input of fairseq-preprocess
    bpe/code  or  bpe/spm.model        the segmentation model
    prep_stats.json                    counts for the final summary
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

from pet_fairseq.preprocessing import bpe as bpe_mod
from pet_fairseq.preprocessing.files import (
    PrepError,
    check_parallel,
    download,
    extract_tgz,
    find_file,
    prepare_output_dir,
    read_lines,
    require_file,
    write_lines,
)
from pet_fairseq.preprocessing.parallel import map_lines
from pet_fairseq.preprocessing.text import (
    CleanStats,
    LineProcessor,
    TokenizeConfig,
    clean_pairs,
    extract_segment,
    fix_apostrophe,
    is_every_nth,
    strip_train_tags,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SPLITS = ("train", "valid", "test")

IWSLT14_URL = "http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"
IWSLT14_TEST_SETS = (  # fairseq's concatenation order for test
    "IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011",
    "IWSLT14.TED.tst2012",
)
MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{name}.{lang}.gz"
MULTI30K_NAMES = {"train": ("train",), "valid": ("val", "valid"), "test": ("test_2016_flickr", "test")}


@dataclass(frozen=True)
class Recipe:
    """Per-dataset defaults (the values of fairseq's scripts where one exists)."""

    name: str
    languages: frozenset[str]
    default_src: str
    default_tgt: str
    merges: int
    vocab_size: int
    lowercase: bool
    aggressive: bool
    max_len: int
    ratio: float
    clean_after_bpe: bool
    description: str


RECIPES: dict[str, Recipe] = {
    "iwslt14": Recipe(
        "iwslt14", frozenset({"de", "en"}), "de", "en", merges=10_000, vocab_size=10_000, lowercase=True,
        aggressive=False, max_len=175, ratio=1.5, clean_after_bpe=False,
        description="IWSLT'14 de-en as fairseq's prepare-iwslt14.sh (tokenized, lowercased, 10k joint BPE)",
    ),
    "wmt14": Recipe(
        "wmt14", frozenset({"de", "en"}), "en", "de", merges=40_000, vocab_size=32_000, lowercase=False,
        aggressive=True, max_len=250, ratio=1.5, clean_after_bpe=True,
        description="WMT'14 en-de as fairseq's prepare-wmt14en2de.sh (cased, tokenized -a, 40k joint BPE)",
    ),
    "multi30k": Recipe(
        "multi30k", frozenset({"de", "en"}), "de", "en", merges=8_000, vocab_size=8_000, lowercase=True,
        aggressive=False, max_len=175, ratio=9.0, clean_after_bpe=False,  # clean-corpus-n's default ratio
        description="Multi30k task 1 de-en (tokenized, lowercased like IWSLT'14, 8k joint BPE)",
    ),
}


@dataclass
class Options:
    """Everything a recipe run needs (built by the CLI)."""

    dataset: str
    src: str
    tgt: str
    out: Path
    workers: int = 2
    force: bool = False
    bpe: str = bpe_mod.SUBWORD_NMT
    bpe_merges: int | None = None
    vocab_size: int | None = None
    bpe_codes: Path | None = None
    spm_model_type: str = "bpe"
    max_train_lines: int | None = None
    lowercase: bool | None = None
    clean_ratio: float | None = None
    max_len: int | None = None
    raw: Path | None = None
    train: list[tuple[Path, Path]] = field(default_factory=list)
    valid: Path | None = None  # prefix
    test: Path | None = None  # prefix

    @property
    def recipe(self) -> Recipe:
        return RECIPES[self.dataset]


@dataclass
class Sources:
    """Raw inputs of one run: per split, a list of (src, tgt) files, plus how to read them."""

    train: list[tuple[Path, Path]]
    valid: list[tuple[Path, Path]]
    test: list[tuple[Path, Path]]
    origin: str


# ----------------------------------------------------------------------------- options


def check_options(opts: Options) -> None:
    """Reject bad option combinations before anything is read or written."""
    recipe = opts.recipe
    pair = {opts.src, opts.tgt}
    if opts.src == opts.tgt or not pair <= recipe.languages:
        supported = "-".join(sorted(recipe.languages))
        raise PrepError(
            f"unknown language pair {opts.src}-{opts.tgt} for {recipe.name}: this recipe supports "
            f"{supported} in either direction (--src de --tgt en or --src en --tgt de)."
        )
    if opts.workers < 1:
        raise PrepError(f"--workers must be at least 1, got {opts.workers}.")
    if opts.max_train_lines is not None and opts.max_train_lines < 1:
        raise PrepError(f"--max-train-lines must be at least 1, got {opts.max_train_lines}.")
    for flag, value in (("--bpe-merges", opts.bpe_merges), ("--vocab-size", opts.vocab_size)):
        if value is not None and value < 1:
            raise PrepError(f"{flag} must be at least 1, got {value}.")
    if opts.bpe == bpe_mod.SUBWORD_NMT and opts.vocab_size is not None:
        raise PrepError("--vocab-size applies to --bpe sentencepiece; use --bpe-merges N with subword-nmt.")
    if opts.bpe == bpe_mod.SENTENCEPIECE and opts.bpe_merges is not None:
        raise PrepError("--bpe-merges applies to --bpe subword-nmt; use --vocab-size N with sentencepiece.")
    if opts.bpe_codes is not None:
        bpe_mod.check_codes(opts.bpe_codes, opts.bpe)


# ----------------------------------------------------------------------------- sources


def _pair_prefix(prefix: Path, opts: Options) -> tuple[Path, Path]:
    return Path(f"{prefix}.{opts.src}"), Path(f"{prefix}.{opts.tgt}")


def _require_pair(pair: tuple[Path, Path], what: str, fix: str) -> tuple[Path, Path]:
    for path in pair:
        require_file(path, what, fix)
    return pair


def iwslt14_sources(opts: Options) -> Sources:
    """The de-en folder (from --raw, a .tgz, or a download) with train.tags and the test xml."""
    fix = "Pass --raw PATH to a local IWSLT'14 de-en.tgz or to its extracted de-en/ folder."
    if opts.raw is None:
        archive = download(IWSLT14_URL, opts.out / "orig" / "de-en.tgz")
        if archive is None:
            raise PrepError(
                f"could not download {IWSLT14_URL} (no network?). Fetch de-en.tgz on a machine with "
                f"internet, copy it here and rerun with --raw PATH/de-en.tgz (or the extracted folder)."
            )
        root, origin = extract_tgz(archive, opts.out / "orig"), f"downloaded {IWSLT14_URL}"
    elif opts.raw.is_file():
        root, origin = extract_tgz(opts.raw, opts.out / "orig"), f"archive {opts.raw}"
    elif opts.raw.is_dir():
        root, origin = opts.raw, f"folder {opts.raw}"
    else:
        raise PrepError(f"--raw {opts.raw} does not exist. {fix}")
    src_tags = find_file(root, [f"train.tags.de-en.{opts.src}"])
    if src_tags is None:
        raise PrepError(f"train.tags.de-en.{opts.src} not found under {root}. {fix}")
    folder = src_tags.parent
    train = [_require_pair(_pair_prefix(folder / "train.tags.de-en", opts), "IWSLT'14 training file", fix)]
    test = [_require_pair((folder / f"{name}.de-en.{opts.src}.xml", folder / f"{name}.de-en.{opts.tgt}.xml"),
                          "IWSLT'14 test-set file", fix) for name in IWSLT14_TEST_SETS]
    return Sources(train=train, valid=[], test=test, origin=origin)


def _multi30k_local(folder: Path, opts: Options) -> dict[str, tuple[Path, Path]] | None:
    found: dict[str, tuple[Path, Path]] = {}
    for split, names in MULTI30K_NAMES.items():
        for name in names:
            for suffix in ("", ".gz"):
                pair = (folder / f"{name}.{opts.src}{suffix}", folder / f"{name}.{opts.tgt}{suffix}")
                if split not in found and all(p.is_file() for p in pair):
                    found[split] = pair
    return found if len(found) == len(SPLITS) else None


def multi30k_sources(opts: Options) -> Sources:
    """--raw DIR, else ../shared/data/multi30k-de-en, else a download from the multi30k repo."""
    layout = "train.{de,en}, val.{de,en}, test.{de,en} (or test_2016_flickr.*; .gz allowed)"
    if opts.raw is not None:
        found = _multi30k_local(opts.raw, opts) if opts.raw.is_dir() else None
        if found is None:
            raise PrepError(f"--raw {opts.raw} must be a folder with {layout}.")
        return Sources([found["train"]], [found["valid"]], [found["test"]], f"folder {opts.raw}")
    local = SHARED_DATA / "multi30k-de-en"
    found = _multi30k_local(local, opts) if local.is_dir() else None
    if found is not None:
        return Sources([found["train"]], [found["valid"]], [found["test"]], f"local copy {local}")
    orig = opts.out / "orig"
    pairs = {}
    for split, names in MULTI30K_NAMES.items():
        files = []
        for lang in (opts.src, opts.tgt):
            url = MULTI30K_URL.format(name=names[0], lang=lang)
            if download(url, orig / f"{names[0]}.{lang}.gz") is None:
                raise PrepError(
                    f"no Multi30k data: {local} does not exist and {url} could not be downloaded "
                    f"(no network?). Pass --raw DIR, a folder with {layout}."
                )
            files.append(orig / f"{names[0]}.{lang}.gz")
        pairs[split] = (files[0], files[1])
    return Sources([pairs["train"]], [pairs["valid"]], [pairs["test"]], "downloaded from github.com/multi30k")


def _wmt_eval_pair(prefix: Path | None, name: str, opts: Options, what: str) -> tuple[Path, Path]:
    flag = "--valid" if name == "newstest2013" else "--test"
    fix = (f"Pass {flag} PREFIX (files PREFIX.{opts.src} and PREFIX.{opts.tgt}, plain text, "
           "or PREFIX.L.sgm as in WMT's test-full).")
    if prefix is not None:
        pair = _pair_prefix(prefix, opts)
        if not all(p.is_file() for p in pair):
            pair = (Path(f"{pair[0]}.sgm"), Path(f"{pair[1]}.sgm"))
        return _require_pair(pair, f"{what} file", fix)
    candidates = [d for d in (opts.raw, opts.raw.parent if opts.raw else None, SHARED_DATA / "wmt14-en-de") if d]
    for folder in candidates:
        pair = _pair_prefix(folder / name, opts)
        if all(p.is_file() for p in pair):
            return pair
    raise PrepError(f"{what} ({name}) not found in {', '.join(map(str, candidates))}. {fix}")


def wmt14_sources(opts: Options) -> Sources:
    """Training pairs from --train/--train-src/--train-tgt or every X.src/X.tgt pair in --raw."""
    train = list(opts.train)
    if opts.raw is not None:
        if not opts.raw.is_dir():
            raise PrepError(f"--raw {opts.raw} is not a folder (expected parallel files NAME.{opts.src}/NAME.{opts.tgt}).")
        for src in sorted(opts.raw.glob(f"*.{opts.src}")):
            tgt = src.with_suffix(f".{opts.tgt}")
            if tgt.is_file() and not src.name.startswith(("newstest2013", "newstest2014")):
                train.append((src, tgt))
    if not train:
        raise PrepError(
            "no WMT'14 training data: pass --train PREFIX (repeatable; PREFIX.en + PREFIX.de), "
            "--train-src FILE --train-tgt FILE, or --raw DIR with NAME.en/NAME.de pairs."
        )
    for pair in train:
        _require_pair(pair, "training file", "Check the --train/--train-src/--train-tgt/--raw paths.")
    valid = _wmt_eval_pair(opts.valid, "newstest2013", opts, "validation set")
    test = _wmt_eval_pair(opts.test, "newstest2014", opts, "test set")
    origin = ", ".join(str(p[0].with_suffix("")) for p in train)
    return Sources(train, [valid], [test], f"training corpora {origin}")


SOURCE_RESOLVERS: dict[str, Callable[[Options], Sources]] = {
    "iwslt14": iwslt14_sources, "wmt14": wmt14_sources, "multi30k": multi30k_sources,
}


# ----------------------------------------------------------------------------- reading


def _is_markup(path: Path) -> bool:
    return path.suffix in {".xml", ".sgm"}


def read_segments(path: Path) -> Iterator[str]:
    """Text lines of a plain file, or the ``<seg>`` contents of an .xml/.sgm file."""
    if not _is_markup(path):
        yield from read_lines(path)
        return
    for line in read_lines(path):
        text = extract_segment(line)
        if text is not None:
            yield text


def read_train_tags(path: Path) -> Iterator[str]:
    """Lines of an IWSLT train.tags file that survive fairseq's tag filter."""
    for line in read_lines(path):
        text = strip_train_tags(line)
        if text is not None:
            yield text


def count_pairs(pairs: list[tuple[Path, Path]], reader: Callable[[Path], Iterator[str]]) -> int:
    """Total aligned pairs of a list of file pairs; errors name the file pair that differs."""
    total = 0
    for src, tgt in pairs:
        if reader is read_lines:
            total += check_parallel(src, tgt)
            continue
        n_src, n_tgt = sum(1 for _ in reader(src)), sum(1 for _ in reader(tgt))
        if n_src != n_tgt:
            kind = "segments" if _is_markup(src) else "lines after stripping the tag lines"
            raise PrepError(
                f"parallel files do not align: {src} has {n_src} {kind}, {tgt} has {n_tgt}. "
                "Both sides must come from the same release; re-extract them."
            )
        total += n_src
    return total


def iter_side(pairs: list[tuple[Path, Path]], side: int, reader: Callable[[Path], Iterator[str]]) -> Iterator[str]:
    """Lines of one side (0 = src, 1 = tgt) of a list of file pairs, concatenated in order."""
    for pair in pairs:
        yield from reader(pair[side])


# ----------------------------------------------------------------------------- steps


def tokenize_side(
    lines: Iterable[str], total: int, config: TokenizeConfig, out_path: Path, workers: int, desc: str,
) -> int:
    """Tokenize (normalise, lowercase as configured) lines into ``out_path``."""
    return write_lines(out_path, map_lines(LineProcessor, (config,), lines, workers, total, desc))


def write_pairs(pairs: Iterable[tuple[str, str]], src_path: Path, tgt_path: Path) -> int:
    """Write aligned pairs to two files; return how many."""
    src_path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(src_path, "w", encoding="utf-8") as fs, open(tgt_path, "w", encoding="utf-8") as ft:
        for src, tgt in pairs:
            fs.write(src + "\n")
            ft.write(tgt + "\n")
            count += 1
    return count


def file_pairs(src_path: Path, tgt_path: Path) -> Iterator[tuple[str, str]]:
    return zip(read_lines(src_path), read_lines(tgt_path))


def count_empty(src_path: Path, tgt_path: Path) -> int:
    """Pairs with an empty (whitespace-only) side: kept in valid/test, but reported."""
    return sum(1 for s, t in file_pairs(src_path, tgt_path) if not s.strip() or not t.strip())


class Run:
    """One recipe run: paths, options and the statistics gathered on the way."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.recipe = opts.recipe
        self.langs = (opts.src, opts.tgt)
        self.tmp, self.tok, self.bpe = opts.out / "tmp", opts.out / "tok", opts.out / "bpe"
        self.stats: dict = {"dataset": opts.dataset, "src": opts.src, "tgt": opts.tgt, "splits": {}}
        self.lowercase = self.recipe.lowercase if opts.lowercase is None else opts.lowercase
        self.max_len = opts.max_len or self.recipe.max_len
        self.ratio = opts.clean_ratio or self.recipe.ratio
        self.origin = "--raw"  #: where the inputs come from (Sources.origin), for messages

    def path(self, folder: Path, split: str, lang: str) -> Path:
        return folder / f"{split}.{lang}"

    def config(self, lang: str, train: bool) -> TokenizeConfig:
        wmt_train = train and self.recipe.name == "wmt14"
        return TokenizeConfig(lang=lang, aggressive=self.recipe.aggressive, lowercase=self.lowercase,
                              normalize_punct=wmt_train, remove_non_printing=wmt_train)

    def tokenize_pairs(self, pairs: list[tuple[Path, Path]], reader: Callable, split: str, out_dir: Path,
                       limit: int | None = None, transform: Callable[[str], str] | None = None) -> int:
        """Tokenize both sides of ``pairs`` (optionally the first ``limit`` only) into out_dir/split.L."""
        total = count_pairs(pairs, reader)
        n = min(total, limit) if limit else total
        for side, lang in enumerate(self.langs):
            lines = islice(iter_side(pairs, side, reader), n)
            if transform is not None:
                lines = map(transform, lines)
            tokenize_side(lines, n, self.config(lang, split == "train"), self.path(out_dir, split, lang),
                          self.opts.workers, f"tokenize {split}.{lang}")
        self.stats["splits"].setdefault(split, {})["input_pairs"] = n
        if limit and total > n:
            self.stats["splits"][split]["input_pairs_available"] = total
        return n

    def clean(self, folder_in: Path, split: str, folder_out: Path, name_in: str | None = None) -> CleanStats:
        """clean-corpus-n.perl on folder_in/split.* into folder_out/split.*."""
        stats = CleanStats()
        name_in = name_in or split
        src_in, tgt_in = (self.path(folder_in, name_in, lang) for lang in self.langs)
        kept = clean_pairs(file_pairs(src_in, tgt_in), 1, self.max_len, self.ratio, stats)
        if folder_in == folder_out and name_in == split:
            tmp_src, tmp_tgt = (self.path(self.tmp, f"{split}.clean", lang) for lang in self.langs)
            write_pairs(kept, tmp_src, tmp_tgt)
            tmp_src.replace(src_in)
            tmp_tgt.replace(tgt_in)
        else:
            write_pairs(kept, *(self.path(folder_out, split, lang) for lang in self.langs))
        self.stats["splits"].setdefault(split, {})["clean"] = stats.as_dict()
        return stats

    def segment(self) -> None:
        """Learn (or reuse) the joint subword model, then segment every tok/ file into bpe/."""
        opts = self.opts
        self.bpe.mkdir(parents=True, exist_ok=True)
        train_files = [self.path(self.tok, "train", lang) for lang in self.langs]
        if not any(True for _ in read_lines(train_files[0])):
            read = self.stats["splits"].get("train", {}).get("input_pairs", 0)
            raise PrepError(f"no training sentence pairs: the training files ({self.origin}) hold {read} pairs"
                            f"{', none left after cleaning' if read else ''}; pass training files that hold text "
                            "(one sentence per line, both sides aligned).")
        if opts.bpe == bpe_mod.SENTENCEPIECE:
            model = self.bpe / "spm.model"
            if opts.bpe_codes is not None:
                shutil.copyfile(opts.bpe_codes, model)
            else:
                size = opts.vocab_size or self.recipe.vocab_size
                print(f"training sentencepiece ({opts.spm_model_type}, vocab {size}) on {', '.join(map(str, train_files))}")
                bpe_mod.train_sentencepiece(train_files, self.bpe / "spm", size, opts.spm_model_type, opts.workers)
            self.stats["bpe"] = {"method": opts.bpe, "model": str(model),
                                 "vocab_size": bpe_mod.sentencepiece_vocab_size(model),
                                 "given": opts.bpe_codes is not None}
        else:
            model = self.bpe / "code"
            if opts.bpe_codes is not None:
                shutil.copyfile(opts.bpe_codes, model)
                merges = bpe_mod.count_merges(model)
            else:
                wanted = opts.bpe_merges or self.recipe.merges
                print(f"learning {wanted} joint BPE merges (subword-nmt) on {', '.join(map(str, train_files))}")
                merges = bpe_mod.learn_subword_nmt(train_files, model, wanted, opts.workers)
            self.stats["bpe"] = {"method": opts.bpe, "model": str(model), "merges": merges,
                                 "given": opts.bpe_codes is not None}
        factory = bpe_mod.segmenter_factory(opts.bpe)
        for split in SPLITS:
            for lang in self.langs:
                source = self.path(self.tok, split, lang)
                total = sum(1 for _ in read_lines(source))
                write_lines(self.path(self.bpe, split, lang),
                            map_lines(factory, (str(model),), read_lines(source), opts.workers, total,
                                      f"{opts.bpe} {split}.{lang}"))

    def finish(self, sources: Sources) -> None:
        """Record final counts and paths; drop tmp/."""
        for split in SPLITS:
            entry = self.stats["splits"].setdefault(split, {})
            src, tgt = (self.path(self.bpe, split, lang) for lang in self.langs)
            entry["pairs"] = sum(1 for _ in read_lines(src))
            if split != "train":
                entry["empty_pairs_kept"] = count_empty(src, tgt)
        self.stats["origin"] = sources.origin
        self.stats["lowercase"] = self.lowercase
        self.stats["clean"] = {"min_len": 1, "max_len": self.max_len, "ratio": self.ratio,
                               "after_bpe": self.recipe.clean_after_bpe}
        self.stats["paths"] = {"out": str(self.opts.out), "tok": str(self.tok), "bpe": str(self.bpe),
                               "data_bin": str(self.opts.out / "data-bin")}
        shutil.rmtree(self.tmp, ignore_errors=True)
        with open(self.opts.out / "prep_stats.json", "w", encoding="utf-8") as handle:
            json.dump(self.stats, handle, indent=2)


# ----------------------------------------------------------------------------- recipes


def prepare_iwslt14(run: Run, sources: Sources) -> None:
    """train.tags: strip tags, tokenize, clean (1-175, ratio 1.5), lowercase, every 23rd line to
    valid; test: the five xml sets' segments, tokenized and lowercased, concatenated."""
    run.tokenize_pairs(sources.train, read_train_tags, "train.tags", run.tmp, run.opts.max_train_lines)
    n_tags = run.stats["splits"].pop("train.tags")
    stats = CleanStats()
    src_in, tgt_in = (run.path(run.tmp, "train.tags", lang) for lang in run.langs)
    kept = list(enumerate(clean_pairs(file_pairs(src_in, tgt_in), 1, run.max_len, run.ratio, stats)))
    write_pairs((p for i, p in kept if not is_every_nth(i, 23)), *(run.path(run.tok, "train", lang) for lang in run.langs))
    write_pairs((p for i, p in kept if is_every_nth(i, 23)), *(run.path(run.tok, "valid", lang) for lang in run.langs))
    run.stats["splits"]["train"] = {**n_tags, "clean": stats.as_dict(),
                                    "note": "valid = every 23rd cleaned train.tags pair"}
    run.tokenize_pairs(sources.test, read_segments, "test", run.tok)
    run.segment()


def prepare_multi30k(run: Run, sources: Sources) -> None:
    """Tokenize (+lowercase) all splits, clean train (1-175, ratio), joint BPE."""
    run.tokenize_pairs(sources.train, read_lines, "train", run.tmp, run.opts.max_train_lines)
    run.clean(run.tmp, "train", run.tok)
    run.tokenize_pairs(sources.valid, read_lines, "valid", run.tok)
    run.tokenize_pairs(sources.test, read_lines, "test", run.tok)
    run.segment()


def prepare_wmt14(run: Run, sources: Sources) -> None:
    """train: normalize-punctuation, remove-non-printing-char, tokenize -a; valid/test: seg text
    with ’ -> ', tokenize -a; joint BPE on train; clean BPE'd train (1-250, ratio 1.5)."""
    run.tokenize_pairs(sources.train, read_lines, "train", run.tok, run.opts.max_train_lines)
    for split, pairs in (("valid", sources.valid), ("test", sources.test)):
        run.tokenize_pairs(pairs, read_segments, split, run.tok, transform=fix_apostrophe)
    run.segment()
    run.clean(run.bpe, "train", run.bpe)


RECIPE_STEPS: dict[str, Callable[[Run, Sources], None]] = {
    "iwslt14": prepare_iwslt14, "wmt14": prepare_wmt14, "multi30k": prepare_multi30k,
}


def run_recipe(opts: Options) -> dict:
    """Validate, prepare the output folder, run the dataset's steps; return the statistics.

    A run that fails leaves no output folder behind when it created that folder itself.
    """
    check_options(opts)
    created = not opts.out.exists() or (opts.out.is_dir() and not any(opts.out.iterdir()))
    prepare_output_dir(opts.out, opts.force)
    try:
        sources = SOURCE_RESOLVERS[opts.dataset](opts)
        print(f"{opts.recipe.description}\n  source: {sources.origin}\n  output: {opts.out}")
        run = Run(opts)
        run.origin = sources.origin
        RECIPE_STEPS[opts.dataset](run, sources)
        run.finish(sources)
    except BaseException:
        if created:
            shutil.rmtree(opts.out, ignore_errors=True)
        raise
    return run.stats
