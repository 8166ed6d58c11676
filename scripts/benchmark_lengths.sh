#!/usr/bin/env bash
# Decode time against source length (about 25/100/400 tokens), models side by side, the first one
# the reference; timed like scripts/benchmark_speed.sh and scripts/evaluate.sh (pet_fairseq.core.speed).
# All arguments go to `python -m pet_fairseq.evaluation.length_benchmark` (see --help and
# docs/linear_attention.md). Example:
#
#   bash scripts/benchmark_lengths.sh --data-bin data-bin/iwslt14.tokenized.de-en --labels softmax,linear \
#       --lengths 25,100,400 --json results/lengths.json \
#       checkpoints/pet/checkpoint_best.pt checkpoints/pet_linear/checkpoint_best.pt
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/lib/env.sh"
require_env
exec "$PY" -m pet_fairseq.evaluation.length_benchmark "$@"
