#!/usr/bin/env bash
# Profile the gateway under wrk load with py-spy and print the top entries.
#
#   bench/profile.sh [json|sse|pool] [SECONDS]      (defaults: json 10; pool: the fresh 10,000-key pool)
#
# py-spy is not a project dependency: it is installed once into /tmp/bench-tools/venv.
# nginx and wrk are installed from Debian packages when missing (as bench/run.py does).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
TOOLS=/tmp/bench-tools/venv
if [ ! -x "$TOOLS/bin/py-spy" ]; then
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q py-spy
fi
"$PY" -c 'import sys; sys.path.insert(0, "bench"); from processes import ensure_tools; ensure_tools()'
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" bench/profile.py "$TOOLS/bin/py-spy" "${1:-json}" "${2:-10}"
