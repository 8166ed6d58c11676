# The project's environment, the same for every script: $PET_VENV (default: ROOT/.venv).
#   . "$ROOT/scripts/lib/env.sh"   # sets PET_VENV, BIN (its bin/), PY (its python); needs ROOT
# require_env: one clear line and exit 2 when the environment is not installed.
if [ -n "${PET_PYTHON:-}" ]; then
  echo "error: PET_PYTHON is no longer read; set PET_VENV to the virtual environment instead (its bin/python is used)" >&2
  exit 2
fi
PET_VENV="${PET_VENV:-$ROOT/.venv}"
BIN="$PET_VENV/bin"
PY="$BIN/python"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
require_env() {
  if [ ! -x "$PY" ]; then
    echo "error: no environment at $PET_VENV (no bin/python); run: bash scripts/install.sh (or set PET_VENV)" >&2
    exit 2
  fi
}
