#!/usr/bin/env bash
# Idempotent setup: system packages (bubblewrap, libseccomp) when root, a virtual environment,
# and the project with the extras named in $EVALJAIL_EXTRAS (default: scientific,test).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${EVALJAIL_VENV:-.venv}"
EXTRAS="${EVALJAIL_EXTRAS:-scientific,test}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "evaljail needs Python 3.11 or newer; '$PYTHON' is $("$PYTHON" -V 2>&1)." >&2
  exit 1
fi

need_pkgs=()
command -v bwrap >/dev/null 2>&1 || need_pkgs+=(bubblewrap)
# Debian/Ubuntu ship venv and ensurepip separately from python3.
if [ ! -x "${EVALJAIL_VENV:-.venv}/bin/python" ] && ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
  need_pkgs+=("python3-venv")
fi
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || need_pkgs+=(libseccomp2)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${need_pkgs[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "==> missing system packages: ${need_pkgs[*]}" >&2
    echo "    run as root:  apt-get install -y ${need_pkgs[*]}" >&2
    echo "    (without them only the explicit EVALJAIL_ISOLATION=degraded mode can run code)" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtual environment in $VENV"
  if ! "$PYTHON" -m venv "$VENV"; then
    rm -rf "$VENV"
    echo "cannot create a virtual environment: install python3-venv (apt-get install python3-venv)" >&2
    exit 1
  fi
fi

stamp="$VENV/.evaljail-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16) $EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing evaljail[$EXTRAS] into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
