#!/usr/bin/env bash
# Provision a Debian 12 (or Ubuntu 22.04) machine as a bcfl testbed, as root:
# Mininet and its tools, Docker, Containernet, the project in a venv, `bcfl` on PATH, the
# node image, then the tests and a smoke scenario with real netem delays.
#
#   vm/provision.sh [REPO]          REPO defaults to this script's parent directory
#
# Used by the Vagrantfile (`vm/provision.sh /vagrant`) and by vm/test-in-qemu.sh (inside a
# chroot, with the three BCFL_SKIP_* below). Safe to run again: every step checks first.
#
# Environment:
#   BCFL_VENV=/opt/bcfl/venv     where the venv goes
#   BCFL_SKIP_DOCKER=1           no Docker and no node image (even where Docker is installed)
#   BCFL_SKIP_CONTAINERNET=1     no Containernet (its Git repository is not fetched)
#   BCFL_SKIP_TESTS=1            no pytest and no smoke scenario at the end
#   BCFL_TORCH_VERSION=2.13.0    the CPU torch to install
#   BCFL_WHEELS=/opt/wheels      a directory that may hold torch-<version>+cpu-*.whl
#   BCFL_TORCH_INDEX_URL=URL     PyTorch's CPU wheel index (the "CPU" index URL on PyTorch's
#                                install page); unset: pip's configured index, which on the
#                                public one is the CUDA build (~2.8 GB)
#   BCFL_EXTRA_CA=FILE[:FILE]    extra CA certificates (PEM) to trust, e.g. an intercepting
#                                HTTPS proxy's; *.crt and *.pem in REPO/vm/ca/ are taken too
#   BCFL_EXTRAS=test,containers  the project's extras (without Docker: test)
#   BCFL_CONTAINERNET_REF=master the Containernet branch or tag
set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "${1:-$SELF_DIR/..}" && pwd)
VENV=${BCFL_VENV:-/opt/bcfl/venv}
TORCH_VERSION=${BCFL_TORCH_VERSION:-2.13.0}
WHEELS=${BCFL_WHEELS:-/opt/wheels}
EXTRAS=${BCFL_EXTRAS:-test}
if [ "${BCFL_SKIP_DOCKER:-0}" != 1 ] && [ -z "${BCFL_EXTRAS:-}" ]; then
  EXTRAS=test,containers  # the Docker SDK for the containernet backend
fi
CN_REPO=https://github.com/containernet/containernet.git
CN_REF=${BCFL_CONTAINERNET_REF:-master}
CN_DIR=/opt/containernet
SMOKE=${BCFL_SMOKE_SCENARIO:-scenarios/vm_netem.yaml}
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n==> [provision] %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'provision: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (sudo $0 $*)"
[ -f "$REPO/pyproject.toml" ] || die "$REPO has no pyproject.toml: give the repository path"
command -v apt-get >/dev/null || die "apt-get not found: Debian 12 or Ubuntu 22.04 only"
systemd_running() { [ -d /run/systemd/system ]; }

# shellcheck disable=SC1091
. /etc/os-release
step "system: ${PRETTY_NAME:-unknown}; repo $REPO; venv $VENV"
case "${ID:-}-${VERSION_ID:-}" in
  debian-12 | ubuntu-22.04) ;;
  *) note "warning: tested on Debian 12 and Ubuntu 22.04 only; trying anyway" ;;
esac

# Python >= 3.11 (the project's floor): Debian 12 has it as python3; Ubuntu 22.04 as python3.11.
PY_PKGS="python3 python3-venv python3-pip"
if [ "${ID:-}" = ubuntu ] && [ "${VERSION_ID:-}" = 22.04 ]; then
  PY_PKGS="$PY_PKGS python3.11 python3.11-venv"
fi

# Extra CA certificates (an intercepting HTTPS proxy's) before anything is downloaded: into
# the system trust store, which apt, git, Docker and (through PIP_CERT) pip use.
ca_files=()
IFS=: read -r -a given <<<"${BCFL_EXTRA_CA:-}"
for f in "${given[@]}"; do
  [ -z "$f" ] && continue
  [ -f "$f" ] || die "BCFL_EXTRA_CA: $f is not a file (give PEM files separated by ':')"
  ca_files+=("$f")
done
for f in "$REPO"/vm/ca/*.crt "$REPO"/vm/ca/*.pem; do
  if [ -f "$f" ]; then ca_files+=("$f"); fi
done
if [ "${#ca_files[@]}" -gt 0 ]; then
  step "extra CA certificates: ${ca_files[*]}"
  mkdir -p /usr/local/share/ca-certificates/bcfl
  for f in "${ca_files[@]}"; do
    grep -q 'BEGIN CERTIFICATE' "$f" || die "$f holds no PEM certificate (BEGIN CERTIFICATE)"
    cp "$f" "/usr/local/share/ca-certificates/bcfl/$(basename "${f%.*}").crt"
  done
  # Without the ca-certificates package yet, its installation below picks them up.
  if command -v update-ca-certificates >/dev/null; then update-ca-certificates >/dev/null; fi
  export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
  export REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
fi

step "apt packages: mininet and its tools, Open vSwitch, Python, git"
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends \
  mininet bridge-utils iputils-ping ethtool tcpdump iproute2 openvswitch-switch kmod procps \
  ca-certificates git $PY_PKGS >/dev/null
note "mininet $(dpkg-query -W -f='${Version}' mininet), $(ip -V)"
# Real Fashion-MNIST for the data-set tests, where the distribution has it (Debian 12 does).
if apt-cache show dataset-fashion-mnist >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null
fi

step "openvswitch-testcontroller must not run (it grabs every OVS switch)"
if dpkg-query -W -f='${Status}' openvswitch-testcontroller 2>/dev/null | grep -q "ok installed"; then
  note "installed by someone else: stopping, disabling and masking its service"
  if systemd_running; then
    systemctl disable --now openvswitch-testcontroller.service >/dev/null 2>&1 || true
  fi
  systemctl mask openvswitch-testcontroller.service >/dev/null 2>&1 || true
else
  note "not installed: ok"
fi

if [ "${BCFL_SKIP_DOCKER:-0}" = 1 ]; then
  step "Docker: skipped (BCFL_SKIP_DOCKER=1)"
else
  step "Docker (docker.io; debootstrap for the offline node image)"
  apt-get install -y -qq docker.io debootstrap >/dev/null
  if systemd_running; then
    systemctl enable --now docker.service >/dev/null
  fi
  note "$(docker --version)"
fi

PY=python3
if command -v python3.11 >/dev/null; then PY=python3.11; fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' ||
  die "$PY is older than 3.11"

step "venv $VENV ($($PY --version))"
if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
else
  note "exists: reusing it"
fi
PIP=("$VENV/bin/python" -m pip)

step "CPU torch $TORCH_VERSION (never a CUDA build)"
if "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.version.cuda is not None)' 2>/dev/null
then
  note "already there: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
else
  py_tag=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  wheel=$(find "$WHEELS" -maxdepth 1 -name "torch-${TORCH_VERSION}+cpu-${py_tag}-*.whl" \
    2>/dev/null | head -n 1 || true)
  if [ -n "$wheel" ]; then
    note "from the local wheel $wheel"
    "${PIP[@]}" install -q "$wheel"
  else
    index=()
    if [ -n "${BCFL_TORCH_INDEX_URL:-}" ]; then
      note "from BCFL_TORCH_INDEX_URL=$BCFL_TORCH_INDEX_URL"
      index=(--index-url "$BCFL_TORCH_INDEX_URL")
    else
      note "warning: BCFL_TORCH_INDEX_URL is not set: torch from pip's configured index; on the"
      note "public index that is the CUDA build (~2.8 GB download, a ~5 GB venv). Set it to"
      note "the CPU index URL from PyTorch's install page to get the CPU build."
    fi
    "${PIP[@]}" install -q "torch==$TORCH_VERSION" "${index[@]}" ||
      { note "torch $TORCH_VERSION not there: the newest torch of that index instead";
        "${PIP[@]}" install -q torch "${index[@]}"; }
  fi
fi

step "the project: pip install -e '${REPO}[${EXTRAS}]'"
"${PIP[@]}" install -q -e "${REPO}[${EXTRAS}]"
ln -sfn "$VENV/bin/bcfl" /usr/local/bin/bcfl
note "$(command -v bcfl) -> $(readlink /usr/local/bin/bcfl): $(bcfl --version)"

if [ "${BCFL_SKIP_CONTAINERNET:-0}" = 1 ]; then
  step "Containernet: skipped (BCFL_SKIP_CONTAINERNET=1)"
else
  step "Containernet from $CN_REPO ($CN_REF) into the venv"
  apt-get install -y -qq --no-install-recommends iptables >/dev/null
  if [ -d "$CN_DIR/.git" ]; then
    git -C "$CN_DIR" fetch -q --depth 1 origin "$CN_REF"
    git -C "$CN_DIR" checkout -q --force FETCH_HEAD
  else
    git clone -q --depth 1 --branch "$CN_REF" "$CN_REPO" "$CN_DIR"
  fi
  note "at $(git -C "$CN_DIR" rev-parse --short HEAD)"
  # Its setup.py imports its own mininet package (and so `docker`) while building: no build
  # isolation, its run-time dependencies first. It also pins an old docker-py (<= 4.1, broken
  # with today's requests) where the containernet backend needs >= 7: --no-deps.
  "${PIP[@]}" install -q "docker>=7" python-iptables pexpect
  "${PIP[@]}" install -q --no-build-isolation --no-deps "$CN_DIR"
  "$VENV/bin/python" -c 'from mininet.node import Docker; print("    containernet imports:", Docker)'
fi

step "node image (bcfl image build; offline when no registry answers)"
if [ "${BCFL_SKIP_DOCKER:-0}" = 1 ]; then
  note "skipped: BCFL_SKIP_DOCKER=1"
elif ! command -v docker >/dev/null; then
  note "skipped: Docker is not installed"
elif ! bcfl image --help >/dev/null 2>&1; then
  note "skipped: this checkout has no 'bcfl image' command yet"
elif ! docker info >/dev/null 2>&1; then
  note "skipped: the Docker daemon is not reachable"
else
  bcfl image build
fi

if [ "${BCFL_SKIP_TESTS:-0}" = 1 ]; then
  step "tests and smoke scenario: skipped (BCFL_SKIP_TESTS=1)"
  exit 0
fi

step "tests: python -m pytest (as root: the Mininet tests run too)"
cd "$REPO"
"$VENV/bin/python" -m pytest -q

step "smoke scenario with real netem delays: bcfl run $SMOKE --backend mininet"
out=/var/tmp/bcfl-smoke-$(date +%Y%m%d-%H%M%S)
bcfl run "$SMOKE" --backend mininet --delay-mode kernel --out "$out" --quiet
bcfl chain verify "$out"
note "run directory: $out (meta.json says where each link parameter was shaped)"

step "delay fidelity: python bench/fidelity.py --netem-topology $SMOKE"
"$VENV/bin/python" bench/fidelity.py --netem-topology "$SMOKE"

step "done: bcfl is $(command -v bcfl)"
