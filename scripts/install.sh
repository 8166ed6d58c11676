#!/usr/bin/env bash
# Create (or complete) the project's virtual environment: fairseq, torch, sacrebleu, sentencepiece,
# subword-nmt, sacremoses, pytest, ruff, and pet_fairseq itself in editable mode.
#
#   bash scripts/install.sh            # -> .venv/ (or $PET_VENV)
#
# Why not just `pip install -e .`: the official fairseq sdist does not build on Python 3.11, and the
# maintained wheel (ve-fairseq) declares torchaudio, which has no working CPU wheel for torch 2.13.
# So ve-fairseq is installed with --no-deps and its real requirements from requirements.txt.
# An existing torch >= 2.6 (e.g. a CUDA build on a GPU machine) is kept, never replaced.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PET_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
REQ="$ROOT/requirements.txt"

"$PYTHON" - <<'PY' || { echo "error: Python 3.11 is required (found $("$PYTHON" --version 2>&1); 3.12 is untested and pyproject.toml declares 3.11 only); set PYTHON=/path/to/python3.11" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating virtual environment $VENV" >&2
  "$PYTHON" -m venv ${PET_VENV_SYSTEM_SITE:+--system-site-packages} "$VENV"
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
if "$PY" -c "import fairseq, pet_fairseq, sacrebleu, sentencepiece, subword_nmt, sacremoses, pytest, matplotlib, psutil, ctranslate2" 2>/dev/null \
    && [ -x "$VENV/bin/ruff" ]; then
  for command in $(grep -o '^pet-[a-z0-9-]*' "$ROOT/pyproject.toml"); do
    if [ ! -x "$VENV/bin/$command" ]; then  # a command added since this environment was made
      echo "[install] registering the pet-* commands (pyproject.toml [project.scripts])" >&2
      pip_install --no-deps --no-build-isolation -e "$ROOT"
      break
    fi
  done
  echo "[install] environment $VENV is complete" >&2
  exit 0
fi

reqs="$(mktemp)"; trap 'rm -f "$reqs"' EXIT
grep -vE '^\s*(#|$)|^ve-fairseq' "$REQ" > "$reqs"
if "$PY" -c "import torch, sys; from packaging.version import Version as V; sys.exit(0 if V(torch.__version__.split('+')[0]) >= V('2.6') else 1)" 2>/dev/null; then
  echo "[install] keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')" >&2
  sed -i '/^torch==/d' "$reqs"
fi
echo "[install] installing pinned requirements (requirements.txt)" >&2
pip_install -r "$reqs"
echo "[install] installing $(grep '^ve-fairseq' "$REQ") without its torchaudio dependency" >&2
pip_install --no-deps "$(grep '^ve-fairseq' "$REQ")"
# A torchaudio that cannot load (CPU torch 2.13) must not stay importable: fairseq would pick it up.
if "$PY" -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('torchaudio') else 1)" 2>/dev/null \
   && ! "$PY" -c "import torchaudio" 2>/dev/null; then
  echo "[install] removing a broken torchaudio" >&2
  "$PY" -m pip uninstall -y -q torchaudio
fi
pip_install --no-deps --no-build-isolation -e "$ROOT"
"$PY" -c "import fairseq, torch, pet_fairseq; print(f'[install] ok: fairseq {fairseq.__version__}, torch {torch.__version__}, pet_fairseq {pet_fairseq.__version__}')" >&2
