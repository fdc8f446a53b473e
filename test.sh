#!/usr/bin/env bash
# Install everything the tests need (Debian packages, a Python venv), then run them all:
# lint (ruff), types (mypy), and the pytest suite against real servers.
# Extra arguments go to both pytest runs, e.g. ./test.sh -k cfind -x
set -euo pipefail
cd "$(dirname "$0")"

apt_packages=()
command -v storescu >/dev/null 2>&1 || apt_packages+=(dcmtk)
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
command -v firefox-esr >/dev/null 2>&1 || apt_packages+=(firefox-esr)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_packages+=(postgresql)
# tests/test_oidc.py runs a real OpenID Provider (npm's oidc-provider) on Node.js
command -v node >/dev/null 2>&1 || apt_packages+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_packages+=(npm)
# Orthanc and its DICOMweb plugin: the benchmark command compares against them (its
# smoke mode runs in tests/test_bench_smoke.py).
command -v Orthanc >/dev/null 2>&1 || apt_packages+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || apt_packages+=(orthanc-dicomweb)
# The benchmark reads its series retrieve with curl (bench/measure.py).
command -v curl >/dev/null 2>&1 || apt_packages+=(curl)
# tests/test_durable_before_ack.py traces the server's syncs and answers with strace.
command -v strace >/dev/null 2>&1 || apt_packages+=(strace)
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "installing Debian packages: ${apt_packages[*]}"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${apt_packages[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# The suite starts ~300 server and CLI processes. pip byte-compiles what it installs, but
# not an editable install's sources; where PYTHONDONTWRITEBYTECODE is set (as on our CI
# machines) each process would compile src/ again (~0.3 s of CPU per process).
.venv/bin/python -m compileall -q -j 0 src bench

echo "--- ruff"; .venv/bin/ruff check src tests sample_dicom bench
echo "--- mypy"; .venv/bin/mypy
# The suite runs twice: on the embedded backends (SQLite index, blob folder) and on the
# production ones (a throwaway PostgreSQL cluster, a loopback S3 server), see
# tests/backends.py. Tests of a door (browser suites, fuzzers, bounds, TLS) or of pure
# code make the same storage calls on every backend, or none: they are `door_only`
# (tests/conftest.py) and run in the embedded pass only. The runs share nothing (free
# ports, their own temp folders), so three pytest processes run side by side: the
# embedded pass's backend tests (it prints as it goes), its door_only tests, and the
# production pass; the other two print their logs when they end. TEST_SERIAL=1 runs the
# two passes one after the other instead.
if [ "${TEST_SERIAL:-0}" = "1" ]; then
  echo "--- pytest (SQLite, folder)"; .venv/bin/pytest "$@"
  echo "--- pytest (PostgreSQL, S3)"; exec .venv/bin/pytest --db postgres --blobs s3 "$@"
fi
production_log=$(mktemp --suffix=-pytest-postgres-s3.log)
doors_log=$(mktemp --suffix=-pytest-door-only.log)
.venv/bin/pytest --db postgres --blobs s3 "$@" >"$production_log" 2>&1 &
production=$!
.venv/bin/pytest -m door_only "$@" >"$doors_log" 2>&1 &
doors=$!
trap 'kill "$production" "$doors" 2>/dev/null || true' INT TERM
echo "--- pytest (SQLite, folder; its door_only tests and the PostgreSQL + S3 pass run beside it)"
embedded_status=0; .venv/bin/pytest -m "not door_only" "$@" || embedded_status=$?
doors_status=0; wait "$doors" || doors_status=$?
production_status=0; wait "$production" || production_status=$?
# pytest's 5 is "no test selected": arguments such as -k may leave a part empty.
for status in embedded_status doors_status production_status; do
  [ "${!status}" -eq 5 ] && printf -v "$status" 0
done
echo "--- pytest (SQLite, folder), door_only tests, run beside the above (log: $doors_log)"
cat "$doors_log"
echo "--- pytest (PostgreSQL, S3), run beside the above (log: $production_log)"
cat "$production_log"
echo "--- SQLite + folder: exit $embedded_status; its door_only tests: exit $doors_status;" \
  "PostgreSQL + S3: exit $production_status"
[ "$embedded_status" -eq 0 ] && [ "$doors_status" -eq 0 ] && [ "$production_status" -eq 0 ]
