# Sourced by scripts/demo and scripts/test: makes .venv from requirements.lock
# on first use (and again whenever the lock changes), then activates it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
stamp="$(sha256sum "$ROOT/requirements.lock" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.lock-stamp" 2>/dev/null)" != "$stamp" ]]; then
    echo "==> creating $VENV from requirements.lock" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-hashes -r "$ROOT/requirements.lock" 2>&1 | { grep -v "^WARNING: Location" || true; }
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-deps --no-build-isolation -e "$ROOT" 2>&1 | { grep -v "^WARNING: Location" || true; }
    echo "$stamp" >"$VENV/.lock-stamp"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
cd "$ROOT"
