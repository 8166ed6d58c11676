#!/usr/bin/env bash
# Sequence-level KD corpus: decode a data-bin's training split with the teacher and write a new data-bin
# with the same dictionaries (docs/seqkd.md). All arguments go to `python -m pet_fairseq.seqkd`:
#
#   bash scripts/distill_corpus.sh DATA_BIN --teacher teacher.pt --out DATA_BIN.seqkd [--engine ctranslate2] [--beam 5]
#   bash scripts/distill_corpus.sh DATA_BIN --teacher teacher.pt --out OUT --num-shards 8 --shard-id 3   # one shard
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/lib/env.sh"
require_env
exec "$PY" -m pet_fairseq.seqkd "$@"
