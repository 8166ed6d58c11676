#!/usr/bin/env bash
# Export a trained student for deployment. All arguments go to
# `python -m pet_fairseq.export`; see docs/export.md. Examples:
#
#   bash scripts/export.sh unroll checkpoints/pet/checkpoint_best.pt exported/pet.transformer.pt
#   bash scripts/export.sh ctranslate2 checkpoints/pet/checkpoint_best.pt exported/pet-ct2-int8 \
#       --quantization int8 --data-bin data-bin/iwslt14.tokenized.de-en
#   bash scripts/export.sh shortlist exported/shortlist.vmap --data-bin data-bin/iwslt14.tokenized.de-en \
#       --source-lang de --target-lang en     # then: ctranslate2 ... --vocab-shortlist exported/shortlist.vmap
#   bash scripts/export.sh translate exported/pet-ct2-int8 --data-bin data-bin/iwslt14.tokenized.de-en \
#       --bpe subword_nmt --bpe-codes data/iwslt14/code
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/lib/env.sh"
require_env
exec "$PY" -m pet_fairseq.export "$@"
