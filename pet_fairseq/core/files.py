"""File identities and atomic writes: what every cache and corpus of the project builds on.

``file_digest`` names the exact bytes a run was made from (a teacher checkpoint, a binarized
split), so a cache records it and a later reader can refuse a cache made from other files.
``write_json_atomic`` and ``save_npy_atomic`` write to a temporary name in the same folder and
rename into place, so a reader sees either the old file or the complete new one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict

import numpy as np

from pet_fairseq.core.errors import ConfigError


def file_digest(*paths: Path) -> str:
    """SHA-256 of the concatenated contents of ``paths`` (identifies a teacher or a split)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def file_digest_once(path: Path) -> str:
    """:func:`file_digest` of one file, computed once per process while the file keeps its inode, size and modification
    time (a large teacher is hashed once however many checks ask for it)."""
    stat = os.stat(path)
    return _digest_of(os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _digest_of(path: str, inode: int, size: int, mtime_ns: int) -> str:
    return file_digest(Path(path))


def write_json_atomic(path: Path, payload: Dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def infer_pair(data_bin: Path, split: str) -> tuple[str, str]:
    """The language pair of ``split``'s binarized files, else of the data-bin when it holds exactly one."""
    pairs = sorted({p.name.split(".")[1] for p in data_bin.glob(f"{split}.*-*.*.idx")}) or \
        sorted({p.name.split(".")[1] for p in data_bin.glob("*.*-*.*.idx")})
    if len(pairs) != 1:
        raise ConfigError(f"cannot tell the language pair of split '{split}' in {data_bin} (found: "
                         f"{', '.join(pairs) or 'none'}); pass --source-lang and --target-lang")
    src, tgt = pairs[0].split("-")
    return src, tgt


def shard_range(size: int, num_shards: int, shard_id: int) -> range:
    """Indices of shard ``shard_id`` of ``num_shards`` contiguous, balanced shards of ``range(size)``."""
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ConfigError(f"--shard-id must be in 0..{num_shards - 1} and --num-shards >= 1 (got {shard_id}, {num_shards})")
    return range(size * shard_id // num_shards, size * (shard_id + 1) // num_shards)
