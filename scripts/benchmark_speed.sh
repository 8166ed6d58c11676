#!/usr/bin/env bash
# Decode speed of named architectures at their real sizes (random weights, output length forced),
# fairseq and CTranslate2 int8 side by side; batch-64 throughput and batch-1 latency, beam 5 and
# greedy; ratios to the first architecture; a profile of where the decode time goes.
# All arguments go to `python -m pet_fairseq.evaluation.speed_benchmark` (see --help and docs/speed.md):
#
#   bash scripts/benchmark_speed.sh --archs transformer_iwslt_de_en,pet_iwslt_de_en,pet_deep_shallow_iwslt_de_en \
#       --json results/speed.json
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/lib/env.sh"
require_env
exec "$PY" -m pet_fairseq.evaluation.speed_benchmark "$@"
