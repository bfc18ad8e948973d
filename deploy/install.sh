#!/usr/bin/env bash
# Installs pgpulse on a host from its wheel: no checkout, no `make deps`, no database or
# browser packages (Debian needs python3-venv only). Run as root from a copy of deploy/:
#
#   sudo deploy/install.sh pgpulse-0.2.0-py3-none-any.whl
#
# It puts a virtualenv in /opt/pgpulse/venv (`pip install WHEEL`), the units
# pgpulse-relay.service, pgpulse-tick.service and pgpulse-tick.timer in
# /etc/systemd/system, and one environment file per unit in /etc/pgpulse (relay.env: the
# relay's role; tick.env: the ticker's), examples where none exists yet. Environment files
# are made mode 0600 (docs/operating.md, "Running pgpulse with systemd" says why). Run it
# again with a newer wheel to upgrade: the environment files are kept. It enables and
# starts nothing.
#
#   --root DIR   install into DIR instead of / (an image being built; the tests)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=/
wheel=
die() {
  echo "pgpulse install: $*" >&2
  exit 1
}
while (($#)); do
  case $1 in
    --root) (($# > 1)) || die "--root needs a folder"; root=$2; shift 2 ;;
    --root=*) root=${1#--root=}; shift ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$wheel" ] || die "one wheel only"; wheel=$1; shift ;;
  esac
done
[ -n "$wheel" ] || die "name the wheel to install: install.sh [--root DIR] pgpulse-*.whl"
[ -f "$wheel" ] || die "no wheel at $wheel (build one with \`pip wheel --no-deps .\`)"
[ -d "$root" ] || die "no folder $root for --root"
root=$(cd "$root" && pwd)
root=${root%/}
PYTHON=${PYTHON:-python3}
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null ||
  die "$PYTHON cannot make a virtualenv: apt-get install python3-venv"

venv=$root/opt/pgpulse/venv
if [ ! -x "$venv/bin/python" ]; then
  install -d -m 0755 "$root/opt/pgpulse"
  "$PYTHON" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "$wheel"
"$venv/bin/pgpulse" --version

# Environment files hold passwords and tokens: only root reads them, and systemd reads them
# for the service before it starts it as its own unprivileged user.
install -d -m 0700 "$root/etc/pgpulse"
for name in relay tick; do
  target=$root/etc/pgpulse/$name.env
  [ -e "$target" ] || install -m 0600 "$here/systemd/$name.env" "$target"
  chmod 0600 "$target"
done

install -d -m 0755 "$root/etc/systemd/system"
install -m 0644 "$here"/systemd/pgpulse-relay.service "$here"/systemd/pgpulse-tick.service \
  "$here"/systemd/pgpulse-tick.timer "$root/etc/systemd/system/"

if [ "$root" = "" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
cat <<NEXT
pgpulse installed in $venv. Next:
  edit $root/etc/pgpulse/relay.env (the relay's role) and, without pg_cron, tick.env (the ticker's)
  systemctl daemon-reload && systemctl enable --now pgpulse-relay
  without pg_cron: systemctl enable --now pgpulse-tick.timer
NEXT
