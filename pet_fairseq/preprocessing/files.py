"""Input checks and file helpers: every error names the file and says how to fix it."""

from __future__ import annotations

import gzip
import shutil
import tarfile
import urllib.request
from pathlib import Path
from typing import Iterable, Iterator

from pet_fairseq.core.errors import PetError

# Sub-folders a preparation run writes under --out; --force removes exactly these.
OUTPUT_PARTS: tuple[str, ...] = ("tmp", "tok", "bpe", "data-bin", "prep_stats.json", "fairseq-preprocess.log")


class PrepError(PetError):
    """A user-facing problem with the inputs or options (printed without a traceback)."""


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def require_file(path: Path, what: str, fix: str = "") -> Path:
    """``path`` if it is a file, else a :class:`PrepError` naming it (and the fix)."""
    if not path.is_file():
        hint = f" {fix}" if fix else ""
        raise PrepError(f"{what} not found: {path}.{hint}")
    return path


def read_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file (``.gz`` allowed) without their ``\\n``.

    Raises :class:`PrepError` naming the file and the 1-based line on invalid UTF-8.
    """
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise PrepError(
                    f"{path}: line {number} is not valid UTF-8 ({err.reason} at byte {err.start}). "
                    "Convert the file to UTF-8 first, e.g. `iconv -f latin1 -t utf-8 IN > OUT`."
                ) from None
            yield text[:-1] if text.endswith("\n") else text


def count_lines(path: Path) -> int:
    """Number of lines (a last line without ``\\n`` counts), validating UTF-8 on the way."""
    return sum(1 for _ in read_lines(path))


def check_parallel(src: Path, tgt: Path) -> int:
    """Line count shared by a parallel pair of files; :class:`PrepError` when they differ."""
    for path in (src, tgt):
        require_file(path, "input file")
    n_src, n_tgt = count_lines(src), count_lines(tgt)
    if n_src != n_tgt:
        raise PrepError(
            f"parallel files have different line counts: {src} has {n_src} lines, {tgt} has {n_tgt}. "
            "Line i of one side must translate line i of the other: pass the matching files "
            "(or realign them)."
        )
    return n_src


def write_lines(path: Path, lines: Iterable[str]) -> int:
    """Write lines (each followed by ``\\n``) to ``path``; return how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for line in lines:
            handle.write(line + "\n")
            count += 1
    return count


def prepare_output_dir(out: Path, force: bool) -> None:
    """Create ``out``; refuse a non-empty one unless ``force`` (then clear our own outputs)."""
    if out.exists() and not out.is_dir():
        raise PrepError(f"output path {out} exists and is not a folder: pass another --out.")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise PrepError(
                f"output folder {out} already exists and is not empty: nothing was overwritten. "
                "Pass --force to replace its tmp/, tok/, bpe/ and data-bin/ contents, "
                "or choose another --out."
            )
        for part in OUTPUT_PARTS:
            target = out / part
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def extract_tgz(archive: Path, dest: Path) -> Path:
    """Unpack a ``.tgz`` into ``dest`` (no paths outside it) and return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise PrepError(f"cannot unpack {archive}: {err}. Pass the extracted folder instead.") from None
    return dest


def download(url: str, dest: Path, timeout: float = 30.0) -> Path | None:
    """Fetch ``url`` into ``dest``; ``None`` (nothing left behind) when the network fails."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as handle:
            shutil.copyfileobj(response, handle)
    except (OSError, ValueError):
        partial.unlink(missing_ok=True)
        return None
    partial.replace(dest)
    return dest


def find_file(folder: Path, names: Iterable[str]) -> Path | None:
    """The first of ``names`` that exists in ``folder`` (searched recursively), else ``None``."""
    for name in names:
        direct = folder / name
        if direct.is_file():
            return direct
        found = sorted(folder.rglob(name))
        if found:
            return found[0]
    return None
