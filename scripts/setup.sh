#!/usr/bin/env bash
# Prepare this machine for dyncast-bgp development and tests (idempotent).
#
# - Debian packages: routing daemons and tools the namespace tests use. apt-get
#   update runs only when a package is missing, and at most once per run.
# - ./.venv with the python3.11 on PATH; `pip install -e '.[dev]'` only when
#   pyproject.toml changed since the last install (stamp in .venv).
# - ./.venv-exabgp42 with ExaBGP 4.2, for the configuration checks.
#
# The packaged services (frr, bird, gobgpd) are not needed: the lab harness
# starts its own daemons inside network namespaces, with configs, sockets and
# pid files in a temporary directory, so a running service does not get in the
# way (other namespace, other sockets). `--stop-services` stops and disables
# them on a systemd machine anyway (e.g. to keep a CI runner quiet).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PACKAGES=(python3 python3-venv nftables conntrack iproute2 frr bird2 gobgpd iputils-ping tcpdump procps curl)
SERVICES=(frr bird gobgpd)
PYTHON=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.dyncast-setup-stamp
stop_services=false

for arg in "$@"; do
  case $arg in
    --stop-services) stop_services=true ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

log() { printf 'setup: %s\n' "$*"; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    echo "setup: need root to run: $*" >&2
    return 1
  fi
}

missing_packages() {
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) != "install ok installed" ]]; then
      printf '%s\n' "$pkg"
    fi
  done
}

install_packages() {
  if ! command -v dpkg-query >/dev/null; then
    log "not a Debian system: install ${PACKAGES[*]} yourself"
    return 0
  fi
  local missing
  mapfile -t missing < <(missing_packages)
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "Debian packages present"
    return 0
  fi
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

handle_services() {
  [[ -d /run/systemd/system ]] || return 0  # not booted with systemd: nothing runs on its own
  local service
  for service in "${SERVICES[@]}"; do
    systemctl is-active --quiet "$service" 2>/dev/null || continue
    if $stop_services; then
      log "stopping and disabling packaged service $service"
      as_root systemctl disable --now "$service"
    else
      log "packaged service $service is running; the labs do not use it (--stop-services stops it)"
    fi
  done
}

setup_venv() {
  if [[ ! -x $VENV/bin/python ]]; then
    command -v "$PYTHON" >/dev/null || { echo "setup: $PYTHON not found on PATH" >&2; exit 1; }
    log "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
  fi
  local digest
  digest=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [[ -f $STAMP && $(cat "$STAMP") == "$digest" ]] && "$VENV/bin/python" -c 'import dyncast_bgp' 2>/dev/null; then
    log "$VENV up to date with pyproject.toml"
    return 0
  fi
  log "installing the project into $VENV (pyproject.toml changed)"
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  printf '%s\n' "$digest" >"$STAMP"
}

# ExaBGP 4.2 beside the project's 5.0, in its own venv: tests check that the
# configurations we render and ship are valid for both versions.
setup_exabgp42() {
  local venv=.venv-exabgp42
  if [[ -x $venv/bin/exabgp ]] && "$venv/bin/python" -c 'import exabgp' 2>/dev/null; then
    log "$venv present"
    return 0
  fi
  log "installing ExaBGP 4.2 into $venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install -q 'exabgp>=4.2.25,<4.3'
}

install_packages
handle_services
setup_venv
setup_exabgp42
