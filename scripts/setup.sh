#!/usr/bin/env bash
# Installs what pgpulse's tests need on Debian 12: PostgreSQL 15 with pg_cron, redis-server,
# prometheus (promtool), chromium, pgbouncer, systemd (systemd-analyze), python3-venv (apt,
# only when missing), then the project's virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

missing=()
compgen -G "/usr/lib/postgresql/*/lib/pg_cron.so" >/dev/null || missing+=(postgresql-15-cron)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v promtool >/dev/null || missing+=(prometheus)  # promtool checks the alert rules
command -v chromium >/dev/null || missing+=(chromium)    # the status page's browser test
[ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)       # the relay behind a pooler (tests)
command -v systemd-analyze >/dev/null || missing+=(systemd)  # verifies the installed units
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)

if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages; run once: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
