#!/usr/bin/env bash
# Compare a teacher with its students: BLEU, unique parameters, checkpoint size, peak memory and
# decode speed (timed with pet_fairseq.core.speed, like the benchmarks). All arguments go to
# `python -m pet_fairseq.evaluation.compare`; the first checkpoint is the reference. Example:
#
#   bash scripts/evaluate.sh --data-bin data-bin/iwslt14.tokenized.de-en --bpe subword_nmt \
#       --bpe-codes data/iwslt14/code --labels teacher,pet --out-dir results/compare \
#       checkpoints/teacher/checkpoint_best.pt checkpoints/pet/checkpoint_best.pt
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/lib/env.sh"
require_env
exec "$PY" -m pet_fairseq.evaluation.compare "$@"
