"""``python -m pet_fairseq.translate MODEL [INPUT]``: raw text in, translations out, one line per line.

    python -m pet_fairseq.translate checkpoints/pet/kd/checkpoint_best.pt input.de --data-bin DATA > out.en
    echo "Ein Mann fährt Fahrrad." | python -m pet_fairseq.translate exported/pet-ct2-int8

MODEL is a fairseq checkpoint (student or teacher; the dictionaries come from --data-bin, default
the data-bin it was trained on) or a CTranslate2 model directory (``python -m pet_fairseq.export
ctranslate2``). The input is prepared as the data-bin's recipe (DATA/preprocessing.json, written by
data_prep/prepare-*.sh) says: Moses tokenization, lowercasing if the training text was lowercased,
BPE; the output is de-BPE'd and Moses-detokenized. Every input line gets exactly one output line,
in order: empty lines stay empty, lines longer than the model can read are truncated (warning on
stderr naming the line). Lines are read in buffers of --buffer-size and decoded in batches of
--batch-size sentences sorted by length.

--output FILE is written to a temporary file in FILE's folder (.FILE.PID.tmp) and renamed to FILE
only when every line is translated: a failed, interrupted or killed run leaves an existing FILE as
it was (the temporary file is removed, except after a SIGKILL).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import warnings
from itertools import islice
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, List, Optional, TextIO

from pet_fairseq.core.arguments import add_decoding_args, add_device_args, add_language_args, check_positive, resolve_threads
from pet_fairseq.core.cli import command
from pet_fairseq.preprocessing.recipe import RECIPE_FILE, DataRecipe, read_recipe
from pet_fairseq.translate.lines import LineTranslator, TranslateError
from pet_fairseq.translate.text import SourceText, TargetText


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pet-translate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("model", type=Path, help="fairseq checkpoint (.pt) or CTranslate2 model directory")
    p.add_argument("input", nargs="?", default="-", help="text file, one sentence per line (default: - = stdin)")
    p.add_argument("--output", "-o", type=Path,
                   help="write the translations here (default: stdout); written to a temporary file in the same "
                        "folder and renamed to OUTPUT when complete, so a failed or killed run leaves an existing "
                        "OUTPUT unchanged")
    p.add_argument("--data-bin", type=Path,
                   help="data-bin with the dictionaries and preprocessing.json (default: the model's training "
                        "data-bin; for a CTranslate2 model the one recorded at export)")
    p.add_argument("--recipe", type=Path, help="preprocessing recipe file (default: DATA_BIN/preprocessing.json)")
    p.add_argument("--buffer-size", type=int, default=None,
                   help="lines read before decoding them (default: 1 when stdin is a terminal, else 1000)")
    p.add_argument("--no-shortlist", action="store_true",
                   help="decode over the whole target vocabulary even if the model stores a shortlist")
    add_language_args(p)
    add_decoding_args(p)
    add_device_args(p)
    return p


def check_options(args: argparse.Namespace) -> None:
    """Reject impossible numbers and an unusable device before anything is loaded."""
    check_positive(args, ("beam", "batch_size", "buffer_size", "parallel_batches", "max_len_b"))
    check_positive(args, ("max_len_a",), minimum=0)
    args.threads = resolve_threads(args.threads)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise TranslateError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    elif args.device != "cpu":
        raise TranslateError(f"--device {args.device}: expected cpu, cuda or cuda:N")
    if args.input != "-" and not Path(args.input).is_file():
        raise TranslateError(f"input {args.input} is not a file (pass - or nothing to read stdin)")
    if args.output is not None:
        if args.output.is_dir():
            raise TranslateError(f"--output {args.output} is a folder; pass a file name")
        if not Path(os.path.realpath(args.output)).parent.is_dir():
            raise TranslateError(f"--output {args.output}: its folder {args.output.parent} does not exist; "
                                 "create it first")
        if args.input != "-" and args.output.exists() and os.path.samefile(args.output, args.input):
            raise TranslateError(f"--output {args.output} is the input file {args.input}: its text would be replaced by "
                                 "the translations; choose another --output")
    if not args.model.exists():
        raise TranslateError(f"model {args.model} does not exist: pass a checkpoint written by fairseq-train "
                             "or a CTranslate2 model directory")


def load(args: argparse.Namespace):
    """The model (backend), its data-bin's recipe and the language pair, as the options say."""
    from pet_fairseq.core.ctranslate2.model_dir import is_model_dir

    if args.model.is_dir():
        if not is_model_dir(args.model):
            raise TranslateError(f"{args.model} is a folder but not a CTranslate2 model directory (no model.bin)")
        from pet_fairseq.translate.ctranslate2_model import load_ctranslate2_model

        backend, data_bin, langs = load_ctranslate2_model(
            args.model, args.data_bin, args.source_lang, args.target_lang, args.device, args.threads,
            args.beam, args.max_len_a, args.max_len_b, args.batch_size, args.parallel_batches,
            use_shortlist=not args.no_shortlist)
    else:
        import torch

        if args.parallel_batches != 1:
            raise TranslateError("--parallel-batches applies to CTranslate2 model directories; a fairseq checkpoint "
                                 "uses --threads inside each batch")

        from pet_fairseq.translate.fairseq_model import load_fairseq_model

        torch.set_num_threads(args.threads)
        backend, data_bin, langs = load_fairseq_model(
            args.model, args.data_bin, args.source_lang, args.target_lang, args.device, args.beam, args.max_len_a,
            args.max_len_b, args.batch_size)
    recipe = read_recipe(find_recipe(args.recipe, data_bin))
    check_recipe_languages(recipe, langs)
    return backend, recipe, langs


def find_recipe(recipe: Optional[Path], data_bin: Path) -> Path:
    """The recipe file to read: ``--recipe`` (a file, or a folder holding one), else ``DATA_BIN/preprocessing.json``.

    A missing file is a :class:`TranslateError` naming the path looked for and where a recipe comes from.
    """
    folder = data_bin if recipe is None else recipe if recipe.is_dir() else None
    path = recipe if folder is None else folder / RECIPE_FILE
    if path.is_file():
        return path
    where = f"--recipe {recipe}" if recipe is not None else f"the data-bin {data_bin}"
    raise TranslateError(
        f"{path} not found ({where} holds no preprocessing recipe), so the input cannot be prepared like the "
        "model's training text: pass --recipe with the preprocessing.json of the data-bin the text was prepared "
        "in (for a student trained on a seq-KD corpus, the original data-bin's) or --data-bin that data-bin; "
        "data-bins not made by data_prep/prepare-*.sh need a hand-written one (docs/translate.md)")


def check_recipe_languages(recipe: DataRecipe, langs: tuple[str, str]) -> None:
    """The model's languages must be the recipe's (in either direction: the data-bin serves both)."""
    if set(langs) != set(recipe.languages):
        raise TranslateError(f"the model translates {langs[0]}->{langs[1]} but the preprocessing recipe is for "
                             f"{recipe.source_lang}-{recipe.target_lang}: pass the data-bin the model was trained on "
                             "(--data-bin) or its recipe (--recipe)")


def read_lines(stream: BinaryIO, warn) -> Iterator[str]:
    """Lines of a byte stream without their line ends; invalid UTF-8 is replaced (with a warning), never fatal."""
    for number, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            warn(f"warning: line {number} is not valid UTF-8; undecodable bytes were replaced by U+FFFD")
        yield text.rstrip("\r\n")


def translate_stream(translator: LineTranslator, lines: Iterator[str], out: TextIO, buffer_size: int) -> int:
    """Translate ``lines`` buffer by buffer, writing (and flushing) each buffer's translations; return the count."""
    done = 0
    while True:
        buffer = list(islice(lines, buffer_size))
        if not buffer:
            return done
        out.write("".join(line + "\n" for line in translator.translate(buffer, first_number=done + 1)))
        out.flush()
        done += len(buffer)


@contextlib.contextmanager
def replaced_when_complete(path: Path) -> Iterator[TextIO]:
    """A text file to write ``path``'s new content to: a temporary file renamed over ``path`` on success.

    The temporary file (``.NAME.PID.tmp``) lies in the folder of the file ``path`` resolves to, so
    the rename is atomic and a symbolic link stays a link; it gets an existing file's permissions.
    On an exception, Ctrl-C or SIGTERM (turned into ``SystemExit(143)`` meanwhile) it is removed and
    ``path`` keeps its old content. A ``path`` that exists but is no regular file (``/dev/stdout``,
    a FIFO) is written directly.
    """
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_file():
        with open(target, "w", encoding="utf-8") as out:
            yield out
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    restore = _exit_on_sigterm()
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            if target.exists():
                shutil.copymode(target, tmp)
            yield out
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        restore()


def _exit_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM raise ``SystemExit(143)`` so that ``finally`` blocks run; returns what restores the old handler.

    Outside the main thread signal handlers cannot be set: SIGTERM keeps its handler there.
    """
    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@command("translate", level=logging.WARNING)
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # fairseq's batch iterator asks for pinned memory; on a CPU-only machine torch warns once per batch iterator
    warnings.filterwarnings("ignore", message="'pin_memory' argument is set as true but no accelerator is found")

    def warn(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    check_options(args)
    backend, recipe, langs = load(args)
    translator = LineTranslator(backend, SourceText(recipe, langs[0]), TargetText(recipe, langs[1]), warn)
    stdin = args.input == "-"
    buffer_size = args.buffer_size or (1 if stdin and sys.stdin.isatty() else 1000)
    warn(f"[translate] {args.model}: {langs[0]}->{langs[1]}, beam {args.beam}, batch {args.batch_size}, "
         f"{args.device}; input: {'stdin' if stdin else args.input}")
    with contextlib.ExitStack() as stack:
        source = sys.stdin.buffer if stdin else stack.enter_context(open(args.input, "rb"))
        out = stack.enter_context(replaced_when_complete(args.output)) if args.output else sys.stdout
        count = translate_stream(translator, read_lines(source, warn), out, buffer_size)
    warn(f"[translate] {count:,} lines translated{f' to {args.output}' if args.output else ''}")
    return 0
