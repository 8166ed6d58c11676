#!/usr/bin/env bash
# PET recipe on a binarized dataset: teacher -> sequence-level KD corpus -> teacher cache -> student
# distilled with word-level KD (and optionally PET's warm-up phase), all in one budget of student updates.
#
#   bash scripts/train_pet.sh --data-bin DIR --out DIR [--teacher CKPT] [options]
#
# Stages, each cached in OUT/STAGE (teacher, seqkd, cache, student): a finished stage is reused, a rerun with
# other options refuses (naming them) unless --force, and a larger --student-updates resumes the student.
# All arguments go to `python -m pet_fairseq.study.recipe` (the console script pet-recipe), which runs the
# stages with the study's runner; --help lists every option.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/scripts/lib/env.sh"
if [ ! -x "$PY" ]; then
  for arg in "$@"; do
    case "$arg" in -h|--help)
      sed -n '2,/^[^#]/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
      echo "(the option list needs the environment: bash scripts/install.sh, or set PET_VENV)"; exit 0 ;;
    esac
  done
fi
require_env
exec "$PY" -m pet_fairseq.study.recipe "$@"
