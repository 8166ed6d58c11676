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
PY="${PET_PYTHON:-${PET_VENV:-$ROOT/.venv}/bin/python}"
[ -x "$PY" ] || { echo "error: $PY not found; run: bash scripts/install.sh" >&2; exit 2; }
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m pet_fairseq.study "$@"
