#!/usr/bin/env bash
# Sequence-level KD corpus: decode a data-bin's training split with the teacher and write a new data-bin
# with the same dictionaries (docs/seqkd.md). All arguments go to `python -m pet_fairseq.seqkd`:
#
#   bash scripts/distill_corpus.sh DATA_BIN --teacher teacher.pt --out DATA_BIN.seqkd [--engine ctranslate2] [--beam 5]
#   bash scripts/distill_corpus.sh DATA_BIN --teacher teacher.pt --out OUT --num-shards 8 --shard-id 3   # one shard
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PET_PYTHON:-${PET_VENV:-$ROOT/.venv}/bin/python}"
[ -x "$PY" ] || { echo "error: $PY not found; run: bash scripts/install.sh" >&2; exit 2; }
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m pet_fairseq.seqkd "$@"
