#!/usr/bin/env bash
# The whole check: lint, types, layer contracts, the test suite on the real servers, and the routing eval.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
pg_url=$(scripts/servers.sh postgres || true)
export OPSBOT_TEST_POSTGRES_URL=${OPSBOT_TEST_POSTGRES_URL:-$pg_url}
[ -n "$OPSBOT_TEST_POSTGRES_URL" ] || echo "note: no PostgreSQL here; the PostgreSQL store tests will skip" >&2
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/python" scripts/import_tree.py >/dev/null
"$VENV/bin/mypy"
# the layer contracts of .importlinter, on the installed-layout tree import_tree.py laid out
PYTHONPATH=build/typecheck "$VENV/bin/lint-imports" --no-cache --no-logo
"$VENV/bin/opsbot" eval eval/routing-dev.yaml | tail -n 2
"$VENV/bin/opsbot" eval eval/routing-extra.yaml | tail -n 1
exec "$VENV/bin/pytest" -q -p no:cacheprovider "$@"
