#!/usr/bin/env bash
# Greedy layer pruning of a trained fairseq Transformer / PET checkpoint (docs/pruning.md):
#
#   bash scripts/prune_layers.sh DATA --path CKPT --out-dir DIR --target-encoder-layers N \
#       [--target-decoder-layers M] [--strategy greedy|top|compare] [--metric loss|bleu] ...
#
# All options are those of `python -m pet_fairseq.pruning --help`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/lib/env.sh"
require_env
exec "$PY" -m pet_fairseq.pruning "$@"
