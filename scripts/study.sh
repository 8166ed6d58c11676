#!/usr/bin/env bash
# The distillation study: train a spec's student variants under one update budget from one teacher and one
# data-bin, then print one table and plot the learning curves (README "The distillation study").
# All arguments go to `python -m pet_fairseq.study`; finished runs are cached in --out:
#
#   bash scripts/study.sh --spec configs/study/multi30k.json --data-bin runs/quickstart/data/data-bin \
#       --teacher runs/quickstart/pet/teacher/checkpoint_last.pt --out runs/quickstart/study \
#       --source-lang de --target-lang en --bpe-codes runs/quickstart/data/bpe/code --jobs 2 --threads 1
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/lib/env.sh"
require_env
exec "$PY" -m pet_fairseq.study "$@"
