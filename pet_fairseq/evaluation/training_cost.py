"""Training step time from fairseq-train logs, and each run's ratio to the first.

    python -m pet_fairseq.evaluation.training_cost plain=nokd/train.log kd=pet/kd/train.log

reads the end-of-epoch lines (``| train | epoch NNN | ... num_updates N | ... train_wall S``) of
``--log-format simple`` or ``json`` logs (:func:`pet_fairseq.core.training_cost.training_cost`) and
prints seconds per update and the ratio to the first log.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pet_fairseq.core.cli import command
from pet_fairseq.core.training_cost import training_cost


@command("training-cost")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pet-training-cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", metavar="LABEL=LOG", help="fairseq-train logs; the first is the reference")
    args = parser.parse_args(argv)
    rows = []
    for item in args.logs:
        label, _, path = item.rpartition("=")
        try:
            rows.append((label or path, training_cost(Path(path).read_text(encoding="utf-8"))))
        except (OSError, ValueError) as err:
            parser.error(f"{path}: {err}")
    ref = rows[0][1].seconds_per_update
    print("| run | updates | train s | s/update | × first |\n|---|---|---|---|---|")
    for label, cost in rows:
        print(f"| {label} | {cost.updates} | {cost.train_seconds:.0f} | {cost.seconds_per_update:.2f} | "
              f"{cost.seconds_per_update / ref:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
