#!/usr/bin/env bash
# Translate raw text with a trained student or teacher (fairseq checkpoint or CTranslate2 export).
# All arguments go to `python -m pet_fairseq.translate`; see docs/translate.md. Examples:
#
#   bash scripts/translate.sh checkpoints/pet/student/checkpoint_last.pt input.de --data-bin data/multi30k.de-en/data-bin > out.en
#   echo "Ein Mann fährt Fahrrad." | bash scripts/translate.sh exported/pet-ct2-int8
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/lib/env.sh"
require_env
exec "$PY" -m pet_fairseq.translate "$@"
