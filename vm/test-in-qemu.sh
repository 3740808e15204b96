#!/usr/bin/env bash
# Test the mininet backend with REAL kernel netem inside a small Debian 12 VM under QEMU
# (software emulation, -accel tcg), for machines whose own kernel has no netem.
#
#   vm/test-in-qemu.sh            build or reuse the image, boot it, run the tests, exit 0 on PASS
#
# 1. debootstrap Debian 12 (minbase + linux-image-amd64) into CACHE/rootfs;
# 2. chroot into it and run vm/provision.sh the way the Vagrantfile does, with
#    BCFL_SKIP_DOCKER=1 BCFL_SKIP_CONTAINERNET=1 BCFL_SKIP_TESTS=1 (no GitHub from here);
#    this machine's CA bundle, pip configuration and local wheel/index directories go in so
#    that pip works in the chroot; redone only when provision.sh or pyproject.toml change;
# 3. copy the working tree to /opt/bcfl/src in the rootfs (the editable install points
#    there) and make a raw ext4 image of the rootfs with `mkfs.ext4 -d` (no loop mounts);
# 4. boot it with the rootfs' own kernel and initrd, init=vm/qemu-init.sh, which runs
#    vm/in-vm-test.sh (a `bcfl run` of scenarios/vm_netem.yaml on the mininet backend with
#    netem, and `bench/fidelity.py --netem-topology`), writes into a 9p share, prints
#    `BCFL-VM-RESULT: PASS|FAIL` on the serial console and powers off.
# The disk is attached with -snapshot: the cached image is never modified.
#
# Environment:
#   BCFL_VM_CACHE=/var/tmp/bcfl-vm   cache (rootfs, kernel, image, results/<time>/)
#   BCFL_VM_TIMEOUT=2400             seconds the VM may run before it is killed (FAIL)
#   BCFL_VM_MEM=4096 BCFL_VM_CPUS=2  guest memory (MiB) and CPUs
#   BCFL_VM_MIRROR=URL               the Debian mirror for debootstrap; default: the first Debian
#                                    "main" source of this machine's apt configuration
#                                    (/etc/apt/sources.list{,.d/*.list,.d/*.sources})
#   BCFL_VM_DOCKER=1                 also install docker.io in the image (the package; no image
#                                    is pulled) and start dockerd in the guest before the tests,
#                                    so that Docker's br_netfilter + iptables FORWARD DROP are in
#                                    force while the mininet backend runs (they must not matter)
#   BCFL_VM_SSHD=1                   also install openssh-server, sudo and bridge-utils in the
#                                    image (the packages; no daemon runs in the chroot and
#                                    vm/qemu-init.sh starts none): for vm/cluster-vm.sh, whose
#                                    guest init (vm/cluster-vm-init.sh, installed into every
#                                    image as /usr/local/sbin/bcfl-cluster-vm-init) starts sshd
#   BCFL_VM_IMG=PATH                 where step 3 writes the raw image (default CACHE/root.raw);
#                                    vm/cluster-vm.sh uses CACHE/cluster/root.raw so that a test
#                                    run does not replace the image of a running cluster VM
#   BCFL_VM_REBUILD=1                throw the cache away and start again
#   BCFL_VM_PYTEST=1                 also run inside the VM the emu tests marked `kernel` (those
#                                    whose outcome depends on netem, GRE or Docker's firewall)
#   BCFL_VM_PYTEST=all               also run every emu test (tests/emu) inside the VM
#   BCFL_VM_PYTEST_K=EXPR            only the emu tests pytest -k EXPR selects ([A-Za-z0-9_])
#   BCFL_VM_BUILD_ONLY=1             stop after making the image (no boot)
#   BCFL_VM_APPEND=...               more kernel arguments for the guest
#   BCFL_VM_ONLY=run|fidelity|pytest only (a), (b) or (c) inside the VM
#   BCFL_VM_FIDELITY_GATE=0          a fidelity FAIL is reported but does not fail the test
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BCFL_VM_CACHE:-/var/tmp/bcfl-vm}
TIMEOUT=${BCFL_VM_TIMEOUT:-2400}
MEM=${BCFL_VM_MEM:-4096}
CPUS=${BCFL_VM_CPUS:-2}
MIRROR=$(python3 "$REPO/topologies/backends/aptsources.py" "${BCFL_VM_MIRROR:-}" BCFL_VM_MIRROR) ||
  exit 1
DOCKER=${BCFL_VM_DOCKER:-0}
SSHD=${BCFL_VM_SSHD:-0}
SUITE=bookworm
ROOTFS=$CACHE/rootfs
IMG=${BCFL_VM_IMG:-$CACHE/root.raw}
RESULTS=$CACHE/results/$(date +%Y%m%d-%H%M%S)
LOG=$RESULTS/serial.log
SRC_IN_VM=/opt/bcfl/src
T_START=$(date +%s)

step() { printf '\n==> [test-in-qemu +%ss] %s\n' "$(($(date +%s) - T_START))" "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'test-in-qemu: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and mkfs need it)"
for bin in debootstrap qemu-system-x86_64 mkfs.ext4 chroot flock findmnt; do
  command -v "$bin" >/dev/null ||
    die "$bin not found: apt-get install debootstrap qemu-system-x86 qemu-utils e2fsprogs"
done

case "${BCFL_VM_ONLY:-}" in
  "" | run | fidelity | pytest) ;;
  *) die "BCFL_VM_ONLY=${BCFL_VM_ONLY}: allowed: run, fidelity, pytest (or unset: all)" ;;
esac

mkdir -p "$CACHE" "$RESULTS"
exec 9>"$CACHE/lock"
flock -n 9 || { note "another test-in-qemu.sh holds $CACHE/lock: waiting"; flock 9; }

# --- chroot mounts, always undone --------------------------------------------------------
MOUNTS=()
QEMU_PID=
cleanup() {
  local i
  if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
    kill "$QEMU_PID" 2>/dev/null || true
  fi
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    if mountpoint -q "${MOUNTS[i]}"; then
      umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" || true
    fi
  done
  MOUNTS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mounts_under_rootfs() { findmnt -rn -o TARGET | grep -F "$ROOTFS/" || true; }

bind_ro() {  # bind_ro HOSTDIR: HOSTDIR appears read-only at the same path in the rootfs
  mkdir -p "$ROOTFS$1"
  mount --bind "$1" "$ROOTFS$1"
  MOUNTS+=("$ROOTFS$1")
  mount -o remount,bind,ro "$ROOTFS$1"
}

chroot_mounts() {
  mount -t proc proc "$ROOTFS/proc" && MOUNTS+=("$ROOTFS/proc")
  mount -t sysfs sysfs "$ROOTFS/sys" && MOUNTS+=("$ROOTFS/sys")
  mount --bind /dev "$ROOTFS/dev" && MOUNTS+=("$ROOTFS/dev")
  mount --bind /dev/pts "$ROOTFS/dev/pts" && MOUNTS+=("$ROOTFS/dev/pts")
  mkdir -p "$ROOTFS/run"
  mount -t tmpfs tmpfs "$ROOTFS/run" && MOUNTS+=("$ROOTFS/run")
  local d
  for d in /opt/wheels /opt/pypi /opt/pypi-more; do
    if [ -d "$d" ]; then bind_ro "$d"; fi
  done
}

in_chroot() {
  env -i HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DEFAULT_TIMEOUT=180 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 "$@" \
    chroot "$ROOTFS" "${CHROOT_CMD[@]}"
}

copy_tree() {  # the working tree (tracked + untracked, not ignored) -> ROOTFS/SRC_IN_VM
  local dst=$ROOTFS$SRC_IN_VM
  [ -z "$(mounts_under_rootfs)" ] || die "mounts still active under $ROOTFS"
  rm -rf "$dst"
  mkdir -p "$dst"
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
    tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$dst" -xf -
}

if [ "${BCFL_VM_REBUILD:-0}" = 1 ]; then
  step "BCFL_VM_REBUILD=1: removing $CACHE/{rootfs,root.raw,*.stamp} and $IMG"
  [ -z "$(mounts_under_rootfs)" ] || die "mounts still active under $ROOTFS"
  rm -rf "$ROOTFS" "$CACHE/root.raw" "$IMG" "$CACHE"/*.stamp
fi

# --- 1. base system ----------------------------------------------------------------------
if [ ! -f "$CACHE/base.stamp" ]; then
  step "debootstrap $SUITE (minbase + kernel) into $ROOTFS from $MIRROR"
  [ -z "$(mounts_under_rootfs)" ] || die "mounts still active under $ROOTFS"
  rm -rf "$ROOTFS"
  debootstrap --variant=minbase \
    --include=linux-image-amd64,initramfs-tools,zstd,kmod,procps,iproute2,ca-certificates,python3,python3-venv,python3-pip \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -n 30 "$CACHE/debootstrap.log"; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$ROOTFS/etc/apt/sources.list"
  # No daemon may start inside the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
  chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
  echo bcfl-vm >"$ROOTFS/etc/hostname"
  printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$ROOTFS/etc/fstab"
  date -u +%FT%TZ >"$CACHE/base.stamp"
  note "$(du -sh "$ROOTFS" | cut -f1) after debootstrap"
else
  step "base system: cached ($(cat "$CACHE/base.stamp"))"
fi

# --- 2. provision.sh in the chroot --------------------------------------------------------
PROV_KEY=$(cat "$REPO/vm/provision.sh" "$REPO/pyproject.toml" | sha256sum | cut -c1-16)
if [ "$(cat "$CACHE/provision.stamp" 2>/dev/null || true)" != "$PROV_KEY" ]; then
  step "provision.sh in the chroot (BCFL_SKIP_DOCKER=1 BCFL_SKIP_CONTAINERNET=1 BCFL_SKIP_TESTS=1)"
  copy_tree
  cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
  # This machine's CA bundle and pip configuration, so pip reaches the registry from inside.
  cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
  for f in /etc/pip.conf /etc/xdg/pip/pip.conf /etc/xdg/pip/constraints.txt \
    /root/.config/pip/pip.conf; do
    if [ -f "$f" ]; then mkdir -p "$ROOTFS$(dirname "$f")" && cp "$f" "$ROOTFS$f"; fi
  done
  chroot_mounts
  CHROOT_CMD=(bash "$SRC_IN_VM/vm/provision.sh" "$SRC_IN_VM")
  in_chroot BCFL_SKIP_DOCKER=1 BCFL_SKIP_CONTAINERNET=1 BCFL_SKIP_TESTS=1 \
    PIP_FIND_LINKS=/opt/wheels
  cleanup
  rm -rf "$ROOTFS/root/.cache" "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/lib/apt/lists/"*
  echo "$PROV_KEY" >"$CACHE/provision.stamp"
  note "$(du -sh "$ROOTFS" | cut -f1) after provisioning"
else
  step "provisioned rootfs: cached (key $PROV_KEY)"
fi

# --- 2b/2c. extra packages only (no daemon runs in the chroot; the guest's init starts them) ---
apt_into_rootfs() {  # apt_into_rootfs STAMP "WHY" PACKAGE...: once per PROV_KEY
  local stamp=$1 why=$2
  shift 2
  if [ "$(cat "$CACHE/$stamp.stamp" 2>/dev/null || true)" != "$PROV_KEY" ]; then
    step "$* into the rootfs ($why; no daemon runs in the chroot)"
    cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
    chroot_mounts
    CHROOT_CMD=(bash -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $* >/dev/null && dpkg-query -W $*")
    in_chroot
    cleanup
    rm -rf "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/lib/apt/lists/"*
    echo "$PROV_KEY" >"$CACHE/$stamp.stamp"
  else
    step "$* in the rootfs: cached"
  fi
}
# dockerd starts in the guest (BCFL_VM_DOCKER=1)
if [ "$DOCKER" = 1 ]; then apt_into_rootfs docker BCFL_VM_DOCKER=1 docker.io iptables; fi
# sshd starts in the cluster VM's guest (BCFL_VM_SSHD=1, vm/cluster-vm.sh)
if [ "$SSHD" = 1 ]; then apt_into_rootfs ssh BCFL_VM_SSHD=1 openssh-server sudo bridge-utils; fi

# --- 3. this working tree, the init, the disk image --------------------------------------
step "copying the working tree into the rootfs; init = vm/qemu-init.sh (vm/cluster-vm.sh: vm/cluster-vm-init.sh)"
copy_tree
install -m 755 "$REPO/vm/qemu-init.sh" "$ROOTFS/usr/local/sbin/bcfl-vm-init"
install -m 755 "$REPO/vm/cluster-vm-init.sh" "$ROOTFS/usr/local/sbin/bcfl-cluster-vm-init"
KERNEL=$(find "$ROOTFS/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
INITRD=$(find "$ROOTFS/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)
{ [ -n "$KERNEL" ] && [ -n "$INITRD" ]; } || die "no kernel or initrd in $ROOTFS/boot"
cp "$KERNEL" "$CACHE/vmlinuz"
cp "$INITRD" "$CACHE/initrd.img"
[ -z "$(mounts_under_rootfs)" ] || die "mounts still active under $ROOTFS"
used_mb=$(du -sm "$ROOTFS" | cut -f1)
size_mb=$((used_mb + used_mb / 4 + 1024))
step "mkfs.ext4 -d: ${used_mb} MiB of files into a ${size_mb} MiB raw image $IMG"
rm -f "$IMG"
mkdir -p "$(dirname "$IMG")"
mkfs.ext4 -q -F -L bcfl-root -E lazy_itable_init=1 -d "$ROOTFS" "$IMG" "${size_mb}M"

if [ "${BCFL_VM_BUILD_ONLY:-0}" = 1 ]; then
  step "image ready (BCFL_VM_BUILD_ONLY=1: not booting)"
  exit 0
fi

# --- 4. boot -----------------------------------------------------------------------------
step "booting: qemu-system-x86_64 -accel tcg -m $MEM -smp $CPUS (timeout ${TIMEOUT}s); serial log $LOG"
extra=""
case "${BCFL_VM_PYTEST:-0}" in
  0) ;;
  1 | all) extra="bcfl.pytest=$BCFL_VM_PYTEST" ;;
  *) die "BCFL_VM_PYTEST=$BCFL_VM_PYTEST: allowed: 1 (the emu tests marked kernel), all, 0" ;;
esac
if [ -n "${BCFL_VM_ONLY:-}" ]; then extra="$extra bcfl.only=$BCFL_VM_ONLY"; fi
if [ "${BCFL_VM_FIDELITY_GATE:-1}" = 0 ]; then extra="$extra bcfl.fidelity_gate=0"; fi
if [ "$DOCKER" = 1 ]; then extra="$extra bcfl.docker=1"; fi
if [ -n "${BCFL_VM_PYTEST_K:-}" ]; then
  [[ "$BCFL_VM_PYTEST_K" =~ ^[A-Za-z0-9_]+$ ]] ||
    die "BCFL_VM_PYTEST_K=$BCFL_VM_PYTEST_K: one word of [A-Za-z0-9_] (a kernel argument)"
  extra="$extra bcfl.pytest_k=$BCFL_VM_PYTEST_K"
fi
: >"$LOG"
qemu-system-x86_64 -accel tcg -cpu max -m "$MEM" -smp "$CPUS" -display none -no-reboot \
  -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.img" \
  -append "console=ttyS0 root=/dev/vda rw rootfstype=ext4 init=/usr/local/sbin/bcfl-vm-init panic=-1 fsck.mode=skip net.ifnames=0 loglevel=4 ${BCFL_VM_APPEND:-} $extra" \
  -drive "file=$IMG,format=raw,if=virtio,cache=unsafe" -snapshot \
  -virtfs "local,path=$RESULTS,mount_tag=results,security_model=none,id=results" \
  -device virtio-rng-pci -nic none \
  -serial "file:$LOG" -monitor none </dev/null >"$RESULTS/qemu.out" 2>&1 &
QEMU_PID=$!
T_BOOT=$(date +%s)
tail -n +1 -F --pid="$QEMU_PID" "$LOG" 2>/dev/null | tr -d '\r' &
TAIL_PID=$!
while kill -0 "$QEMU_PID" 2>/dev/null; do
  if [ $(($(date +%s) - T_BOOT)) -ge "$TIMEOUT" ]; then
    printf '\ntest-in-qemu: the VM ran past %ss: killing qemu (PID %s)\n' "$TIMEOUT" "$QEMU_PID"
    kill "$QEMU_PID" 2>/dev/null || true
    sleep 2
    kill -9 "$QEMU_PID" 2>/dev/null || true
    break
  fi
  sleep 2
done
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=
sleep 1
kill "$TAIL_PID" 2>/dev/null || true
wait "$TAIL_PID" 2>/dev/null || true
T_END=$(date +%s)

result=$(tr -d '\r' <"$LOG" | grep -a -o '^BCFL-VM-RESULT: [A-Z]*' | tail -n 1 || true)
step "VM ran $((T_END - T_BOOT)) s; the whole script $((T_END - T_START)) s; results in $RESULTS"
if [ -s "$RESULTS/qemu.out" ]; then note "qemu said: $(head -c 2000 "$RESULTS/qemu.out")"; fi
if [ "$result" = "BCFL-VM-RESULT: PASS" ]; then
  echo "test-in-qemu: PASS"
  exit 0
fi
echo "test-in-qemu: FAIL (${result:-no BCFL-VM-RESULT line in the serial log})" >&2
exit 1
