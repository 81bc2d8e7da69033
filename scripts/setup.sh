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

# Reinstall only when pyproject.toml changed or an extra is wanted that is not installed yet.
stamp="$VENV/.evaljail-installed"
digest="$(sha256sum pyproject.toml | cut -c1-16)"
installed_digest="" installed_extras=""
if [ -f "$stamp" ]; then read -r installed_digest installed_extras < "$stamp" || true; fi
need_install=0
[ "$installed_digest" = "$digest" ] || need_install=1
for extra in ${EXTRAS//,/ }; do
  case ",$installed_extras," in *",$extra,"*) ;; *) need_install=1 ;; esac
done
if [ "$need_install" = 1 ]; then
  if [ "$installed_digest" = "$digest" ] && [ -n "$installed_extras" ]; then
    merged=""  # keep what is there, add what is wanted, once each
    for extra in ${installed_extras//,/ } ${EXTRAS//,/ }; do
      case ",$merged," in *",$extra,"*) ;; *) merged="${merged:+$merged,}$extra" ;; esac
    done
    EXTRAS="$merged"
  fi
  echo "==> installing evaljail[$EXTRAS] into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]"
  echo "$digest $EXTRAS" > "$stamp"
fi
