"""``python -m pet_fairseq.kdcache``: cache a teacher's top-k distributions on a data-bin's split.

    python -m pet_fairseq.kdcache DATA_BIN --teacher TEACHER.pt [--out CACHE] [--k 16] [--split train]
        [--num-shards N] [--shard-id I]

The teacher runs teacher-forced over the split, batched as fairseq batches training data, and the
``k`` most probable tokens of every target position are stored with their log-probabilities
(:mod:`pet_fairseq.core.teacher_cache`). Train with it through ``--task pet_distillation
--teacher-cache CACHE --criterion pet_kd``: the KD term reads the cache instead of running the
teacher. Without ``--shard-id`` every unfinished shard is computed in turn and all are merged; a
rerun skips finished shards, so a killed build resumes.

``--encoder-states``/``--decoder-states`` also store the teacher's hidden states after those layers, so
that ``pet_kd``'s intermediate-layer loss (``--inter-beta``) reads them too and no training update
runs the teacher. They cost ``2 · width`` bytes per source (encoder) or target (decoder) token and layer.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from fairseq.data import Dictionary, LanguagePairDataset, data_utils
from tqdm import tqdm

from pet_fairseq.core.arguments import add_device_args, add_language_args
from pet_fairseq.core.cli import command
from pet_fairseq.core.files import infer_pair, shard_range
from pet_fairseq.core.teacher_cache import (
    TeacherCacheError,
    coverage_ks,
    fingerprint,
    finished_shards,
    merge,
    split_files,
    state_arrays,
    write_shard,
)

logger = logging.getLogger("pet_fairseq.kdcache")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pet-kdcache", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data_bin", type=Path, help="binarized data (fairseq-preprocess or seq-KD output) holding --split")
    p.add_argument("--teacher", type=Path, required=True, help="the teacher's fairseq checkpoint (.pt)")
    p.add_argument("--out", type=Path, default=None, help="the cache folder (default: DATA_BIN/teacher-topK)")
    p.add_argument("--split", default="train", help="the split to cache (the one the student trains on)")
    p.add_argument("--k", type=int, default=16, help="tokens kept per position (the rest of the teacher's mass is "
                                                     "dropped and the kept part renormalised by pet_kd)")
    p.add_argument("--max-tokens", type=int, default=8000, help="most padded tokens per teacher batch")
    p.add_argument("--num-shards", type=int, default=8, help="contiguous shards (the unit of resuming and splitting)")
    p.add_argument("--shard-id", type=int, default=None, help="compute only this shard, do not merge")
    p.add_argument("--keep-shards", action="store_true", help="keep the shards after merging")
    p.add_argument("--force", action="store_true",
                   help="replace a finished cache in --out made from another teacher, split or --k")
    p.add_argument("--encoder-states", default="", metavar="LAYERS",
                   help="teacher encoder layers whose hidden states to store for pet_kd's intermediate-layer loss: "
                        "comma-separated (0 = embeddings), 'all' (1..L) or '' (none)")
    p.add_argument("--decoder-states", default="", metavar="LAYERS", help="like --encoder-states, for the decoder")
    add_language_args(p)
    add_device_args(p, parallel_batches=False)
    return p


def check_args(args: argparse.Namespace) -> None:
    """Numeric options and paths, before anything is loaded."""
    for name, low in (("k", 1), ("max_tokens", 1), ("num_shards", 1), ("threads", 0)):
        if getattr(args, name) < low:
            raise TeacherCacheError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    if args.shard_id is not None and not 0 <= args.shard_id < args.num_shards:
        raise TeacherCacheError(f"--shard-id must be in 0..{args.num_shards - 1}, got {args.shard_id}")
    if not args.teacher.is_file():
        raise TeacherCacheError(f"teacher checkpoint {args.teacher} does not exist: pass the teacher's .pt with --teacher")
    if not args.data_bin.is_dir():
        raise TeacherCacheError(f"data-bin {args.data_bin} is not a folder; pass the binarized data the student trains on")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise TeacherCacheError(f"--out {args.out} is a file; pass a folder for the cache")


#: how a refusal names each part of a cache's fingerprint
MADE_FROM = {"teacher_sha256": "another teacher", "split_sha256": "another corpus", "split": "another --split",
             "states": "other --encoder-states/--decoder-states",
             "source_lang": "another direction", "target_lang": "another direction", "vocab": "another vocabulary"}


def check_finished_cache(out: Path, expected: Dict[str, object]) -> bool:
    """Whether ``out`` holds a finished cache (``cache.json``) of exactly this fingerprint; one made from another
    teacher, corpus, ``--k`` or layers is refused."""
    meta = out / "cache.json"
    if not meta.is_file():
        return False
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8")).get("fingerprint", {})
    except (ValueError, AttributeError):
        recorded = {}
    differing = [key for key in sorted(set(expected) | set(recorded)) if recorded.get(key) != expected.get(key)]
    if not differing:
        return True
    reasons = [f"--k {recorded.get('k')} (this run asks for --k {expected['k']})"] if "k" in differing else []
    reasons += sorted({MADE_FROM.get(key, key) for key in differing if key != "k"})
    raise TeacherCacheError(f"--out {out} holds a finished teacher cache made with {' and '.join(reasons)}; pass "
                            "--force to replace it, or choose another --out")


NO_LAYERS = ("", "none")  # what --encoder-states/--decoder-states take for "no hidden states"


def parse_state_layers(text: str, depth: int, option: str) -> List[int]:
    """``"1,3"`` -> [1, 3]; ``"all"`` -> 1..depth; ``""`` -> []. A layer above ``depth`` or not a number is refused."""
    text = text.strip().lower()
    if text in NO_LAYERS:
        return []
    if text == "all":
        return list(range(1, depth + 1))
    layers = []
    for token in text.split(","):
        if not token.strip().isdigit() or int(token) > depth:
            raise TeacherCacheError(f"{option} {text!r}: {token.strip()!r} is not a layer of the teacher's {depth} "
                                    f"(give numbers 0..{depth}, 0 = embeddings, or 'all')")
        layers.append(int(token))
    return sorted(set(layers))


def load_dataset(data_bin: Path, split: str, src: str, tgt: str) -> LanguagePairDataset:
    """The split as fairseq's translation task loads it for training (left-padded sources, right-padded targets)."""
    missing = [p.name for p in split_files(data_bin, split, src, tgt) if not p.is_file()]
    if missing:
        raise TeacherCacheError(f"{data_bin} lacks {', '.join(missing)}; pick another --split or language pair")
    src_dict, tgt_dict = (Dictionary.load(str(data_bin / f"dict.{lang}.txt")) for lang in (src, tgt))
    sources = data_utils.load_indexed_dataset(str(data_bin / f"{split}.{src}-{tgt}.{src}"), src_dict)
    targets = data_utils.load_indexed_dataset(str(data_bin / f"{split}.{src}-{tgt}.{tgt}"), tgt_dict)
    return LanguagePairDataset(sources, sources.sizes, src_dict, targets, targets.sizes, tgt_dict,
                               left_pad_source=True, left_pad_target=False)


def load_teacher(teacher: Path, data_bin: Path, dataset: LanguagePairDataset, src: str, tgt: str, device: str):
    """The teacher, checked (direction, dictionaries) and frozen exactly as ``--task pet_distillation`` loads it."""
    from pet_fairseq.tasks.distillation import DistillationConfig, DistillationTask

    task = DistillationTask(DistillationConfig(data=str(data_bin), source_lang=src, target_lang=tgt,
                                               teacher_path=str(teacher)), dataset.src_dict, dataset.tgt_dict)
    return task.load_teacher(str(teacher)).to(device)


@torch.no_grad()
def compute_shard(teacher, dataset: LanguagePairDataset, rows: range, k: int, max_tokens: int, device: str,
                  progress: tqdm, states: Optional[Dict[str, List[int]]] = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Dict[str, object], Dict[str, np.ndarray]]:
    """Lengths, top-k ids and log-probabilities of the sentences ``rows`` (in order), the shard's record, and the
    hidden states of the ``states`` layers (with the source lengths; empty without ``states``)."""
    from pet_fairseq.tasks.distillation import forward_with_states

    start = time.perf_counter()
    states = {side: list(layers) for side, layers in (states or {}).items() if layers}
    order = np.array(sorted(rows, key=lambda i: (dataset.src_sizes[i], dataset.tgt_sizes[i])), dtype=np.int64)
    batches = data_utils.batch_by_size(order, dataset.num_tokens, max_tokens=max_tokens)
    kept: Dict[int, tuple] = {}
    kept_states: Dict[str, Dict[int, np.ndarray]] = {name: {} for name in state_arrays(states)}
    ks = coverage_ks(k)
    covered = {str(c): 0.0 for c in ks}
    for batch in batches:
        sample = dataset.collater([dataset[int(i)] for i in batch])
        net_input = {key: value.to(device) for key, value in sample["net_input"].items()}
        outputs = forward_with_states(teacher, net_input) if states else None
        logits = outputs.logits if outputs is not None else teacher(**net_input)[0]
        lprobs = torch.log_softmax(logits.float(), dim=-1)
        values, indices = lprobs.topk(min(k, lprobs.size(-1)), dim=-1)
        mask = sample["target"].ne(dataset.tgt_dict.pad()).to(device)
        source_mask = net_input["src_tokens"].ne(dataset.src_dict.pad())
        cumulative = values.exp().cumsum(dim=-1)[mask]
        for c in ks:
            covered[str(c)] += float(cumulative[:, min(c, cumulative.size(-1)) - 1].double().sum())
        for b, sentence in enumerate(sample["id"].tolist()):
            length = int(mask[b].sum())
            kept[sentence] = (indices[b, :length].cpu().numpy(), values[b, :length].cpu().numpy())
            for layer in states.get("encoder", []):  # left-padded source: the sentence's positions, in order
                kept_states[f"encoder_{layer}"][sentence] = \
                    outputs.encoder_states[layer][:, b][source_mask[b]].half().cpu().numpy()
            for layer in states.get("decoder", []):
                kept_states[f"decoder_{layer}"][sentence] = outputs.decoder_states[layer][:length, b].half().cpu().numpy()
        progress.update(len(batch))
    lengths = np.array([len(kept[i][0]) for i in rows], dtype=np.int64)
    tokens = np.concatenate([kept[i][0] for i in rows]) if len(rows) else np.zeros((0, k), np.int32)
    logprobs = np.concatenate([kept[i][1] for i in rows]) if len(rows) else np.zeros((0, k), np.float16)
    record = {"start": rows.start, "stop": rows.stop, "seconds": time.perf_counter() - start, "covered": covered}
    arrays: Dict[str, np.ndarray] = {}
    if states:
        arrays["src_lengths"] = np.array([int(dataset.src_sizes[i]) for i in rows], dtype=np.int64)
        for name, by_sentence in kept_states.items():
            arrays[name] = np.concatenate([by_sentence[i] for i in rows])
    return lengths, tokens, logprobs, record, arrays


def run(args: argparse.Namespace) -> int:
    check_args(args)
    src, tgt = args.source_lang, args.target_lang
    if not (src and tgt):
        try:
            src, tgt = infer_pair(args.data_bin, args.split)
        except ValueError as err:
            raise TeacherCacheError(str(err)) from None
    out = args.out or args.data_bin / f"teacher-top{args.k}"
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data_bin, args.split, src, tgt)
    if args.k > len(dataset.tgt_dict):
        raise TeacherCacheError(f"--k {args.k} exceeds the target vocabulary ({len(dataset.tgt_dict)} types)")
    longest = int(np.maximum(dataset.src_sizes, dataset.tgt_sizes).max()) if len(dataset) else 0
    if longest > args.max_tokens:
        raise TeacherCacheError(f"--max-tokens {args.max_tokens} is below the longest sentence of the {args.split} "
                                f"split ({longest} tokens): a batch must hold it; pass --max-tokens {longest} or more")
    teacher = None
    states: Dict[str, List[int]] = {}
    if any(text.strip().lower() not in NO_LAYERS for text in (args.encoder_states, args.decoder_states)):
        # "all" and a layer's bounds need the teacher's depths
        teacher = load_teacher(args.teacher, args.data_bin, dataset, src, tgt, args.device)
        states = {"encoder": parse_state_layers(args.encoder_states, teacher.encoder.num_layers, "--encoder-states"),
                  "decoder": parse_state_layers(args.decoder_states, teacher.decoder.num_layers, "--decoder-states")}
    expected = fingerprint(args.teacher, args.data_bin, args.split, src, tgt, args.k, len(dataset.tgt_dict), states)
    if not args.force and check_finished_cache(out, expected):
        logger.info("%s already holds this teacher cache (same teacher, corpus, k and layers); reusing it "
                    "(--force rebuilds it)", out)
        return 0
    work = out / "shards"
    work.mkdir(parents=True, exist_ok=True)
    done = set(finished_shards(work, args.num_shards, expected))
    wanted = [args.shard_id] if args.shard_id is not None else list(range(args.num_shards))
    todo = [s for s in wanted if s not in done]
    if done & set(wanted):
        logger.info("%d of %d shards already finished in %s; computing %d", len(done & set(wanted)), len(wanted), work, len(todo))
    if todo:
        teacher = teacher or load_teacher(args.teacher, args.data_bin, dataset, src, tgt, args.device)
        total = sum(len(shard_range(len(dataset), args.num_shards, s)) for s in todo)
        with tqdm(total=total, unit="sent", desc=f"teacher top-{args.k}", file=sys.stderr, mininterval=10) as progress:
            for shard_id in todo:
                rows = shard_range(len(dataset), args.num_shards, shard_id)
                lengths, tokens, logprobs, record, arrays = compute_shard(
                    teacher, dataset, rows, args.k, args.max_tokens, args.device, progress, expected.get("states"))
                write_shard(work, shard_id, args.num_shards, lengths, tokens, logprobs, {**record, "fingerprint": expected},
                            arrays)
    if args.shard_id is not None:
        logger.info("shard %d of %d finished in %s; run again without --shard-id to merge once every shard is finished",
                    args.shard_id, args.num_shards, work)
        return 0
    made_from = {"teacher": str(args.teacher), "data_bin": str(args.data_bin)}
    summary = merge(work, out, len(dataset), args.num_shards, expected, {"made_from": made_from})
    if not args.keep_shards:
        shutil.rmtree(work)
    mass = summary["mean_teacher_mass_in_top_k"]
    print(f"teacher cache: top-{args.k} of {summary['positions']:,} target positions of {summary['sentences']:,} "
          f"{args.split} sentences -> {out}; mean teacher mass kept: "
          f"{', '.join(f'top-{c} {100 * v:.2f} %' for c, v in mass.items())}; {summary['build_seconds']:.0f} s"
          + "".join(f"; {side} states of layers {','.join(map(str, layers))}" for side, layers in states.items() if layers),
          file=sys.stderr)
    return 0


@command("kdcache")
def main(argv: Optional[List[str]] = None) -> int:
    return run(build_parser().parse_args(argv))
