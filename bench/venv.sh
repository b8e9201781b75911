#!/usr/bin/env bash
# The bench scripts' Python: a venv in bench/.venv with matplotlib (from
# PyPI), made on first use. Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")"
MATPLOTLIB_VERSION=3.9.2
if ! .venv/bin/python -c "import matplotlib; assert matplotlib.__version__ == '$MATPLOTLIB_VERSION'" 2>/dev/null; then
  python3 -m venv .venv >&2
  .venv/bin/pip install -q "matplotlib==$MATPLOTLIB_VERSION" >&2
fi
echo "$PWD/.venv/bin/python"
