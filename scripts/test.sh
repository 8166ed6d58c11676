#!/usr/bin/env bash
# Install what is missing (scripts/install.sh), then run the whole test suite.
#   bash scripts/test.sh [pytest args]       e.g.  bash scripts/test.sh -m "not e2e"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/install.sh"
cd "$ROOT"
exec "${PET_VENV:-$ROOT/.venv}/bin/python" -m pytest -q -ra "$@"
