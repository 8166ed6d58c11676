"""Command line: ``python -m pet_fairseq.pruning DATA --path CKPT --out-dir DIR --target-encoder-layers N ...``.

Writes to ``--out-dir``: ``STRATEGY/checkpoint_pruned.pt`` (rewritten after every step: the most
pruned model so far; with ``--keep-every-step`` also ``STRATEGY/checkpoint_encE_decD.pt``) and
``pruning_log.json`` (settings, the original's score, every step with every candidate's score,
fine-tuning flags), rewritten after every step so an interrupted run keeps what it did;
``--resume`` continues it. The per-depth comparison table goes to stdout and ``comparison.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from pet_fairseq.core.arguments import OwnDefault, add_decoding_args, add_language_args, check_positive
from pet_fairseq.core.cli import command
from pet_fairseq.core.direction import check_direction
from pet_fairseq.core.errors import InputError
from pet_fairseq.pruning.errors import PruningError
from pet_fairseq.pruning.greedy import ORDERS, Step, check_targets, search
from pet_fairseq.pruning.scoring import METRICS, ScoreSettings, checkpoint_score, load_validation
from pet_fairseq.pruning.surgery import (
    SIDES,
    architecture_flags,
    architecture_name,
    layer_map,
    prune_state,
    save_checkpoint,
    skipping,
    stack_layout,
)

logger = logging.getLogger("pet_fairseq.pruning")

LOG_NAME = "pruning_log.json"
#: settings that must match for ``--resume`` to continue a log
_RESUME_KEYS = ("checkpoint", "data_bin", "subset", "metric", "max_sentences", "beam", "remove_bpe", "order", "targets")


#: the decoding default scoring needs, and why (shown in --help)
OWN_DEFAULTS = {"batch_size": OwnDefault(None, "no sentence cap: scoring batches are bounded by --max-tokens, as "
                                               "fairseq-validate's")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pet-prune",
        description="Greedy layer pruning of a fairseq Transformer or PET checkpoint (Peer et al.): remove "
        "encoder/decoder depths one at a time, each time the one whose removal hurts a validation metric least.",
    )
    p.add_argument("data_bin", metavar="DATA", help="binarized data (fairseq-preprocess output) with the validation subset")
    p.add_argument("--path", required=True, metavar="CKPT", help="trained fairseq 'transformer' or 'pet_transformer' checkpoint")
    p.add_argument("--out-dir", required=True, help="where pruned checkpoints and pruning_log.json go")
    p.add_argument("--target-encoder-layers", type=int, metavar="N", help="encoder depth to prune to (default: keep all)")
    p.add_argument("--target-decoder-layers", type=int, metavar="M", help="decoder depth to prune to (default: keep all)")
    p.add_argument("--strategy", choices=("greedy", "top", "compare"), default="greedy",
                   help="greedy search (default), drop the top layers (baseline), or both with a per-depth table")
    p.add_argument("--order", choices=ORDERS, default="joint",
                   help="joint: encoder and decoder depths compete at every step (default); or prune one side first")
    p.add_argument("--metric", choices=METRICS, default="loss",
                   help="loss: reference-token NLL without label smoothing (fast, default); bleu: beam search + BLEU")
    p.add_argument("--subset", default="valid", help="subset to score on (default: valid)")
    p.add_argument("--max-sentences", type=int, metavar="N", help="score on the first N sentences only (speed)")
    p.add_argument("--remove-bpe", nargs="?", const="subword_nmt", default=None, metavar="SYMBOL",
                   help="remove BPE before BLEU, as fairseq-generate --remove-bpe (default: none; bare flag: subword_nmt)")
    scoring = add_decoding_args(p, own=OWN_DEFAULTS, note="scoring batches hold at most --max-tokens tokens (and "
                                "--batch-size sentences, when given); --beam, --max-len-a and --max-len-b apply to "
                                "--metric bleu, as in fairseq-generate")
    scoring.add_argument("--max-tokens", type=int, default=4096, help="scoring batch size in tokens (default: 4096)")
    add_language_args(p)
    p.add_argument("--cpu", action="store_true", help="score on the CPU even if CUDA is available")
    p.add_argument("--keep-every-step", action="store_true",
                   help="also keep the checkpoint of every depth (STRATEGY/checkpoint_encE_decD.pt)")
    p.add_argument("--resume", action="store_true", help="continue the run recorded in --out-dir/pruning_log.json")
    p.add_argument("--no-verify", action="store_true",
                   help="do not reload the final pruned checkpoint to check that it scores what the search measured")
    return p


def _read_checkpoint(path: Path) -> dict[str, Any]:
    from pet_fairseq.core.checkpoint import read_checkpoint

    try:
        return read_checkpoint(path)
    except InputError as err:
        raise PruningError(f"--path: {err}") from err


def _check_data(state: dict, args: argparse.Namespace) -> tuple[str, str]:
    from pet_fairseq.core import checks

    data_bin = Path(args.data_bin)
    if not data_bin.is_dir():
        raise PruningError(f"data-bin {data_bin} is not a folder: pass the fairseq-preprocess output (--destdir)")
    task = checks.task_config(state)
    check_direction(f"--path {args.path}", (task.get("source_lang"), task.get("target_lang")), args.source_lang,
                    args.target_lang, error=PruningError)
    try:
        src, tgt = checks.resolve_languages(state, data_bin, args.source_lang, args.target_lang)
        checks.check_subset(data_bin, args.subset, src, tgt)
        checks.check_dictionaries(state, data_bin, src, tgt)
    except InputError as err:
        raise PruningError(str(err)) from err
    return src, tgt


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _start_log(path: Path, settings: dict, resume: bool) -> dict:
    if not path.exists():
        return {"settings": settings, "original": None, "runs": {}}
    if not resume:
        raise PruningError(f"{path} exists from an earlier run: pass --resume to continue it, or another --out-dir")
    log = json.loads(path.read_text())
    differ = [k for k in _RESUME_KEYS if log.get("settings", {}).get(k) != settings.get(k)]
    if differ:
        raise PruningError(f"--resume: {path} was written with other settings ({', '.join(differ)}); "
                           "rerun with the same ones or use another --out-dir")
    logger.info("resuming %s: %s", path, {s: len(r["steps"]) for s, r in log["runs"].items()})
    return log


def _finetune_hint(state: dict, kept: dict[str, list[int]], checkpoint: Path, original: Path) -> dict:
    return {
        "checkpoint": str(checkpoint),
        "architecture_flags": architecture_flags(state),
        "encoder_layer_map": layer_map(kept["encoder"]),
        "decoder_layer_map": layer_map(kept["decoder"]),
        "command": " ".join([
            "fairseq-train DATA --user-dir pet_fairseq --task pet_distillation", f"--teacher-path {original}",
            "--criterion pet_kd", f"--finetune-from-model {checkpoint}",
            f"--arch {architecture_name(state)} <the original's other model flags>",
            *architecture_flags(state), f"--encoder-layer-map {layer_map(kept['encoder'])}",
            f"--decoder-layer-map {layer_map(kept['decoder'])}", "<optimizer flags>",
        ]),
    }


def comparison_rows(log: dict) -> list[dict]:
    """One row per number of removed layers: depths and score of each strategy run."""
    original = log["original"]
    rows = [{"removed": 0, **{s: (original["encoder_layers"], original["decoder_layers"], original["score"])
                              for s in log["runs"]}}]
    for strategy, run in log["runs"].items():
        for step in run["steps"]:
            while len(rows) <= step["step"]:
                rows.append({"removed": len(rows)})
            rows[step["step"]][strategy] = (step["encoder_layers"], step["decoder_layers"], step["score"])
    return rows


def comparison_table(log: dict) -> str:
    strategies = list(log["runs"])
    label = log["original"]["label"]
    header = "| removed | " + " | ".join(f"{s}: enc+dec | {s}: {label}" for s in strategies) + " |"
    lines = [header, "|" + "---|" * (1 + 2 * len(strategies))]
    for row in comparison_rows(log):
        cells = [str(row["removed"])]
        for s in strategies:
            if s in row:
                enc, dec, score = row[s]
                cells += [f"{enc}+{dec}", f"{score:.4f}"]
            else:
                cells += ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_out_dir(out_dir: Path) -> None:
    """``--out-dir`` must be a folder, or a path where one can be created (not a file, not under a file)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise PruningError(f"--out-dir {out_dir} is a file; pass a folder (it is created if missing)")
    above = next((p for p in out_dir.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise PruningError(f"--out-dir {out_dir} lies under {above}, which is a file; pass a folder (it is created "
                           "if missing)")


def run(args: argparse.Namespace) -> dict:
    check_positive(args, ("beam", "batch_size", "max_tokens"))
    check_out_dir(Path(args.out_dir))
    checkpoint = Path(args.path).resolve()
    state = _read_checkpoint(checkpoint)
    layouts = {side: stack_layout(state, side) for side in SIDES}
    depths = {side: layouts[side].depth for side in SIDES}
    targets = check_targets(depths, {"encoder": args.target_encoder_layers, "decoder": args.target_decoder_layers})
    if args.max_sentences is not None and args.max_sentences < 1:
        raise PruningError(f"--max-sentences {args.max_sentences}: pass a positive number (or leave it out for all)")
    src, tgt = _check_data(state, args)

    import torch

    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    strategies = ["greedy", "top"] if args.strategy == "compare" else [args.strategy]
    settings_dict = {
        "checkpoint": str(checkpoint), "data_bin": str(Path(args.data_bin).resolve()), "subset": args.subset,
        "metric": args.metric, "max_sentences": args.max_sentences, "beam": args.beam if args.metric == "bleu" else None,
        "remove_bpe": args.remove_bpe, "order": args.order, "targets": targets, "strategies": strategies,
        "original_layers": depths,
        "original_plans": {side: str(layouts[side].plan) for side in SIDES if layouts[side].explicit_plan},
    }
    log_path = out / LOG_NAME
    log = _start_log(log_path, settings_dict, args.resume)
    log["settings"]["strategies"] = sorted(set(log["settings"].get("strategies", [])) | set(strategies),
                                           key=["greedy", "top"].index)

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    settings = ScoreSettings(
        data_bin=args.data_bin, subset=args.subset, metric=args.metric, max_sentences=args.max_sentences,
        max_tokens=args.max_tokens, batch_size=args.batch_size, beam=args.beam, max_len_a=args.max_len_a,
        max_len_b=args.max_len_b, remove_bpe=args.remove_bpe, device=device, source_lang=src, target_lang=tgt,
    )
    validation = load_validation(checkpoint, settings)
    logger.info("scoring by %s on %d sentences of %s/%s (%s)", settings.label, validation.sentences, args.data_bin,
                args.subset, device)

    def score(removed) -> float:
        with skipping(validation.model, removed):
            return validation.score()

    if log["original"] is None:
        log["original"] = {"encoder_layers": depths["encoder"], "decoder_layers": depths["decoder"],
                           "score": validation.score(), "label": settings.label, "sentences": validation.sentences}
        _write_json(log_path, log)
    logger.info("original (%d+%d layers): %s %.4f", depths["encoder"], depths["decoder"], settings.label,
                log["original"]["score"])

    for strategy in strategies:
        run_log = log["runs"].setdefault(strategy, {"steps": [], "finished": False})
        folder = out / strategy
        pruned_path = folder / "checkpoint_pruned.pt"

        def save_step(step: Step, strategy=strategy, run_log=run_log, folder=folder, pruned_path=pruned_path) -> None:
            kept = {"encoder": step.encoder_kept, "decoder": step.decoder_kept}
            removed = {side: set(range(depths[side])) - set(kept[side]) for side in SIDES}
            pruned = prune_state(state, removed)
            save_checkpoint(pruned, pruned_path)  # before the log, so the log never names a missing step
            if args.keep_every_step:
                save_checkpoint(pruned, folder / f"checkpoint_enc{step.encoder_layers}_dec{step.decoder_layers}.pt")
            run_log["steps"].append(step.to_dict())
            run_log["checkpoint"] = str(pruned_path)
            run_log["finetune"] = _finetune_hint(pruned, kept, pruned_path, checkpoint)
            _write_json(log_path, log)

        done = [Step.from_dict(d) for d in run_log["steps"]]
        search(score, depths, targets, strategy=strategy, order=args.order, higher_is_better=settings.higher_is_better,
               done=done, on_step=save_step, label=settings.label)
        if not run_log["finished"] and not args.no_verify:
            verified = checkpoint_score(pruned_path, settings)
            expected = run_log["steps"][-1]["score"]
            run_log["verified_score"] = verified
            if abs(verified - expected) > 1e-3 * max(1.0, abs(expected)):
                raise PruningError(f"{pruned_path} scores {verified:.4f} when reloaded but the search measured "
                                   f"{expected:.4f}: please report this bug")
            logger.info("%s: reloaded %s scores %.4f (as measured in the search)", strategy, pruned_path, verified)
        run_log["finished"] = True
        _write_json(log_path, log)

    table = comparison_table(log)
    (out / "comparison.md").write_text(table + "\n")
    print(table)
    for strategy in strategies:
        hint = log["runs"][strategy]["finetune"]
        print(f"\n{strategy}: {hint['checkpoint']}\n  fine-tune with KD: {hint['command']}")
    return log


@command("prune")
def main(argv: list[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0
