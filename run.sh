#!/usr/bin/env bash
# Install minipacs in a local venv and start it on the embedded defaults:
# SQLite + blob folder in ./minipacs-data, sample studies loaded on first start,
# DICOM on port 11112 (AE MINIPACS), web on http://127.0.0.1:8080.
# Extra arguments go to `minipacs serve` (see ./run.sh --help).
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
.venv/bin/python -m compileall -q -j 0 src  # an editable install is not byte-compiled
exec .venv/bin/minipacs serve "$@"
