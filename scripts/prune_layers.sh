#!/usr/bin/env bash
# Greedy layer pruning of a trained fairseq Transformer / PET checkpoint (docs/pruning.md):
#
#   bash scripts/prune_layers.sh DATA --path CKPT --out-dir DIR --target-encoder-layers N \
#       [--target-decoder-layers M] [--strategy greedy|top|compare] [--metric loss|bleu] ...
#
# All options are those of `python -m pet_fairseq.pruning --help`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PET_VENV:-$ROOT/.venv}/bin/python"
[ -x "$PYTHON" ] || { echo "error: $PYTHON not found; run: bash scripts/install.sh (or set PET_VENV)" >&2; exit 2; }
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m pet_fairseq.pruning "$@"
