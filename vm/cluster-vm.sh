#!/usr/bin/env bash
# A second "server" for Mininet Cluster Edition tests: a Debian 12 VM with its own kernel under
# QEMU (software emulation, -accel tcg: no KVM needed), on a host tap interface, with sshd,
# Mininet (mnexec), sudo, bridge-utils and this project's venv (/opt/bcfl/venv, the working
# tree as /opt/bcfl/src, installed editable).
#
#   vm/cluster-vm.sh start         build/refresh the image, boot the VM, wait until ssh works
#   vm/cluster-vm.sh status        running or not, address, pid, uptime (exit 0 running, 3 not)
#   vm/cluster-vm.sh ssh [CMD...]  run CMD on the guest as root (no CMD: a login shell)
#   vm/cluster-vm.sh clock         print the guest's clock offset from the host's (no change)
#   vm/cluster-vm.sh sync-clock    set the guest's clock from the host's again, print the offset
#   vm/cluster-vm.sh sync-tree     copy this working tree (tracked and untracked, not ignored)
#                                  into the running guest's /opt/bcfl/src (the editable install):
#                                  the same code on both servers without a new image
#   vm/cluster-vm.sh stop          power the guest off (qemu is killed after a grace period),
#                                  remove the tap
#   vm/cluster-vm.sh load-image TAG  (BCFL_CLUSTER_VM_DOCKER=1) copy the Docker image TAG from
#                                  this machine's engine (DOCKER_HOST) into the guest's:
#                                  docker save | ssh docker load; nothing if it has it
#
# start:
# 1. `BCFL_VM_SSHD=1 BCFL_VM_BUILD_ONLY=1 BCFL_VM_IMG=CACHE/cluster/root.raw vm/test-in-qemu.sh`:
#    the cached rootfs of vm/test-in-qemu.sh (built there on first use) plus openssh-server,
#    sudo and bridge-utils, with this working tree copied in; a separate image, so that a test
#    run does not replace the image under a running cluster VM;
# 2. an ssh key pair CACHE/cluster/id_ed25519 (once), the public key in CACHE/cluster/share/,
#    which the guest mounts read-only over 9p (tag bcflkey) as root's authorized_keys;
# 3. a tap interface TAP with NET.1/24 on the host; the guest gets NET.2/24 on its eth0
#    (virtio-net) from the kernel argument bcfl.addr=;
# 4. qemu-system-x86_64 -accel tcg -cpu max, the image with -snapshot (never modified),
#    init=vm/cluster-vm-init.sh (no systemd: mounts, modules tun/gre/ip_gre, eth0, sshd;
#    `poweroff` = sync + sysrq o), daemonized; pid file CACHE/cluster/qemu.pid, serial log
#    CACHE/cluster/serial.log;
# 5. waits until `ssh root@NET.2 true` works, then sets the guest's clock from the host's
#    (`date -s @SECONDS.NANOS`, then up to 3 corrections by the measured offset) and prints it.
# CACHE/cluster/known_hosts: the guest's host keys (ssh-keyscan once ssh works, every start);
# CACHE/cluster/ssh_config: a Host entry (bcfl-vm2, NET.2) for `ssh -F` or an Include.
#
# Environment:
#   BCFL_VM_CACHE=/var/tmp/bcfl-vm    the cache of vm/test-in-qemu.sh; this script uses CACHE/cluster
#   BCFL_CLUSTER_VM_MEM=4096          guest memory (MiB)
#   BCFL_CLUSTER_VM_CPUS=2            guest CPUs
#   BCFL_CLUSTER_VM_TIMEOUT=600       seconds start waits for ssh before it gives up (and kills qemu)
#   BCFL_CLUSTER_VM_TAP=bcflvm0       the host's tap interface
#   BCFL_CLUSTER_VM_NET=172.31.77       the /24: host NET.1, guest NET.2
#   BCFL_CLUSTER_VM_NAME=bcfl-vm2     the guest's host name
#   BCFL_CLUSTER_VM_BUILD=0           start: reuse CACHE/cluster/root.raw as it is (no refresh)
#   BCFL_CLUSTER_VM_GRACE=30          stop: seconds between the poweroff and killing qemu
#   BCFL_CLUSTER_VM_APPEND=...        more kernel arguments for the guest
#   BCFL_CLUSTER_VM_DOCKER=0          1: docker.io in the image (BCFL_VM_DOCKER=1 of
#                                     vm/test-in-qemu.sh), a second disk CACHE/cluster/docker.raw
#                                     (ext4, sparse, BCFL_CLUSTER_VM_DOCKER_GB=12, kept across
#                                     boots: loaded images stay) as the guest's /var/lib/docker,
#                                     and dockerd started by the guest's init (start waits for it)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BCFL_VM_CACHE:-/var/tmp/bcfl-vm}
DIR=$CACHE/cluster
IMG=$DIR/root.raw
KEY=$DIR/id_ed25519
SHARE=$DIR/share
PIDFILE=$DIR/qemu.pid
LOG=$DIR/serial.log
SSH_CONFIG=$DIR/ssh_config
KNOWN_HOSTS=$DIR/known_hosts
MEM=${BCFL_CLUSTER_VM_MEM:-4096}
CPUS=${BCFL_CLUSTER_VM_CPUS:-2}
DOCKER=${BCFL_CLUSTER_VM_DOCKER:-0}
DOCKER_GB=${BCFL_CLUSTER_VM_DOCKER_GB:-12}
DOCKER_DISK=$DIR/docker.raw
TIMEOUT=${BCFL_CLUSTER_VM_TIMEOUT:-600}
TAP=${BCFL_CLUSTER_VM_TAP:-bcflvm0}
NET=${BCFL_CLUSTER_VM_NET:-172.31.77}
NAME=${BCFL_CLUSTER_VM_NAME:-bcfl-vm2}
GRACE=${BCFL_CLUSTER_VM_GRACE:-30}
HOST_IP=$NET.1
GUEST_IP=$NET.2
T_START=$(date +%s)

step() { printf '==> [cluster-vm +%ss] %s\n' "$(($(date +%s) - T_START))" "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'cluster-vm: error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '7,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
  exit 2
}

[ $# -ge 1 ] || usage
CMD=$1
shift
case "$CMD" in start | status | ssh | stop | clock | sync-clock | sync-tree | load-image) ;; -h | --help | help) usage ;; *) usage ;; esac

[ "$(id -u)" = 0 ] || die "run as root (the tap interface, qemu's tap and the root-only key need it)"
need() {  # need BINARY PACKAGE
  command -v "$1" >/dev/null || die "$1 not found: apt-get install $2"
}
need ssh openssh-client
need ssh-keygen openssh-client
need ip iproute2
need flock util-linux
need qemu-system-x86_64 qemu-system-x86
[[ "$NET" =~ ^(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){2}$ ]] ||
  die "BCFL_CLUSTER_VM_NET=$NET: three octets of a /24, e.g. 172.31.77"
[[ "$TAP" =~ ^[A-Za-z0-9_.-]{1,15}$ ]] || die "BCFL_CLUSTER_VM_TAP=$TAP: an interface name (1-15 of [A-Za-z0-9_.-])"
[[ "$NAME" =~ ^[A-Za-z0-9-]{1,63}$ ]] || die "BCFL_CLUSTER_VM_NAME=$NAME: a host name ([A-Za-z0-9-])"
[[ "$DOCKER" =~ ^[01]$ ]] || die "BCFL_CLUSTER_VM_DOCKER=$DOCKER: 0 or 1"
for v in MEM CPUS TIMEOUT GRACE DOCKER_GB; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "BCFL_CLUSTER_VM_$v=${!v}: a whole number"
done

SSH_OPTS=(-i "$KEY" -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=no
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10
  -o ServerAliveInterval=15 -o ServerAliveCountMax=4)
# shellcheck disable=SC2029  # CMD is meant to be expanded by the guest's shell
gssh() { ssh "${SSH_OPTS[@]}" "root@$GUEST_IP" "$@"; }
ssh_line() { echo "ssh -i $KEY -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@$GUEST_IP"; }

qemu_pid() {  # prints the running cluster VM's qemu PID; fails when none runs
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "qemu-system.*$IMG" || return 1
  echo "$pid"
}

is_tap() { ip -d link show dev "$1" 2>/dev/null | grep -q 'tun type tap'; }
remove_tap() {
  if ip link show dev "$TAP" >/dev/null 2>&1; then
    is_tap "$TAP" || die "$TAP exists and is no tap interface: not touching it (BCFL_CLUSTER_VM_TAP=...)"
    ip link del dev "$TAP"
    note "removed tap $TAP"
  fi
}

ssh_ready() { timeout 20 ssh "${SSH_OPTS[@]}" -o ConnectTimeout=5 "root@$GUEST_IP" true </dev/null >/dev/null 2>&1; }

lock() {
  mkdir -p "$DIR"
  exec 8>"$DIR/lock"
  flock -n 8 || { note "another cluster-vm.sh holds $DIR/lock: waiting"; flock 8; }
}

# --- the guest's clock ---------------------------------------------------------------------
# One ssh session; the guest answers with bash's $EPOCHREALTIME (no fork), so the offset
# (guest - host, at the midpoint of the exchange with the smallest round trip) is good to
# about half that round trip.
clock_session() {  # clock_session set|check
  local mode=$1 line a0 a1 t0 t1 g rtt best_rtt=999999999 off=0 half now
  # shellcheck disable=SC2016  # expanded by the guest's shell
  coproc CLK { gssh 'echo ready; while read -r c a; do case $c in
      now) echo "$EPOCHREALTIME" ;;
      set) if date -s "@$a" >/dev/null; then echo ok; else echo failed; fi ;;
      adj) if python3 -c "import sys, time; time.clock_settime(time.CLOCK_REALTIME, time.clock_gettime(time.CLOCK_REALTIME) - float(sys.argv[1]))" "$a"; then echo ok; else echo failed; fi ;;
      *) exit 0 ;; esac; done'; }
  local out=${CLK[0]:-} in=${CLK[1]:-}
  [ -n "$out" ] || { echo "ssh ended at once"; return 1; }
  line=
  read -r -t 60 line <&"$out" || true
  [ "$line" = ready ] || { echo "no answer"; return 1; }
  measure() {  # sets off (us) and best_rtt (us) from 9 exchanges
    best_rtt=999999999
    for _ in 1 2 3 4 5 6 7 8 9; do
      a0=$EPOCHREALTIME
      echo now >&"$in"
      read -r -t 30 g <&"$out" || return 1
      a1=$EPOCHREALTIME
      [[ "$g" =~ ^[0-9]+\.[0-9]{6}$ ]] || return 1
      t0=$((10#${a0/./})) t1=$((10#${a1/./})) g=$((10#${g/./}))  # microseconds
      rtt=$((t1 - t0))
      if [ "$rtt" -lt "$best_rtt" ]; then
        best_rtt=$rtt
        off=$((g - (t0 + t1) / 2))
      fi
    done
  }
  if [ "$mode" = set ]; then
    measure || { echo "no answer"; return 1; }
    half=$((best_rtt / 2))
    a0=$EPOCHREALTIME
    now=$((10#${a0/./} + half))
    echo "set ${now:0:-6}.${now: -6}" >&"$in"
    line=
    read -r -t 30 line <&"$out" || true
    [ "$line" = ok ] || { echo "date -s failed"; return 1; }
    # date -s lands late by its own start-up in the guest (60 ms measured under TCG): up to
    # three corrections by the measured offset, each read and set in one process
    for _ in 1 2 3; do
      measure || { echo "no answer"; return 1; }
      [ "${off#-}" -gt 200 ] || break
      echo "adj $(awk -v o="$off" 'BEGIN { printf "%.6f", o / 1e6 }')" >&"$in"
      line=
      read -r -t 60 line <&"$out" || true
      [ "$line" = ok ] || { echo "correction failed"; return 1; }
    done
  fi
  measure || { echo "no answer"; return 1; }
  echo quit >&"$in"
  wait "${CLK_PID:-}" 2>/dev/null || true
  awk -v o="$off" -v r="$best_rtt" 'BEGIN { printf "guest - host = %+.3f ms (round trip %.3f ms)\n", o / 1e3, r / 1e3 }'
}

print_info() {
  local pid=$1
  note "address: $GUEST_IP (host $HOST_IP on tap $TAP), name $NAME, qemu PID $pid"
  note "ssh:     $(ssh_line)"
  note "         or: ssh -F $SSH_CONFIG $NAME   or: vm/cluster-vm.sh ssh [CMD...]"
  note "host keys: $KNOWN_HOSTS   serial: $LOG"
}

# --- subcommands ---------------------------------------------------------------------------
cmd_status() {
  local pid up
  if pid=$(qemu_pid); then
    up=$(ps -o etimes= -p "$pid" | tr -d ' ')
    echo "cluster VM: running (qemu PID $pid, up ${up} s), $GUEST_IP on tap $TAP"
    if ssh_ready; then
      echo "ssh: ready ($(gssh 'cut -d" " -f1 /proc/uptime' </dev/null) s of guest uptime)"
    else
      echo "ssh: not answering (yet?); serial log: $LOG"
    fi
    note "ssh: $(ssh_line)"
    return 0
  fi
  echo "cluster VM: not running"
  if ip link show dev "$TAP" >/dev/null 2>&1; then note "(the tap $TAP is left over: vm/cluster-vm.sh stop removes it)"; fi
  return 3
}

cmd_ssh() {
  [ -f "$KEY" ] || die "no key $KEY: vm/cluster-vm.sh start first"
  qemu_pid >/dev/null || die "the cluster VM is not running: vm/cluster-vm.sh start"
  exec ssh "${SSH_OPTS[@]}" "root@$GUEST_IP" "$@"
}

cmd_clock() {  # cmd_clock set|check
  local out
  qemu_pid >/dev/null || die "the cluster VM is not running: vm/cluster-vm.sh start"
  ssh_ready || die "the guest does not answer ssh at $GUEST_IP"
  out=$(clock_session "$1") || die "clock: $out"
  echo "clock: $out"
}

start_failed() {
  local pid
  if pid=$(qemu_pid); then kill "$pid" 2>/dev/null || true; sleep 2; kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$PIDFILE"
  remove_tap
  if [ -s "$LOG" ]; then
    echo "--- the last lines of the serial log $LOG:"
    tr -d '\r' <"$LOG" | tail -n 25
  fi
  die "$1"
}

cmd_start() {
  local pid t_build t_boot t_ready line elapsed last=0 clock keys
  lock
  if pid=$(qemu_pid); then
    echo "cluster VM: already running (qemu PID $pid)"
    print_info "$pid"
    return 0
  fi
  rm -f "$PIDFILE"
  if ip -o -4 addr show | grep -v " $TAP " | grep -q " inet $NET\.[0-9]*/"; then
    die "$NET.0/24 is already on another interface: choose another with BCFL_CLUSTER_VM_NET=A.B.C"
  fi

  # 1. the image
  if [ "${BCFL_CLUSTER_VM_BUILD:-1}" = 0 ] && [ -f "$IMG" ]; then
    step "image: $IMG as it is (BCFL_CLUSTER_VM_BUILD=0)"
  else
    step "image: BCFL_VM_SSHD=1 BCFL_VM_DOCKER=$DOCKER BCFL_VM_BUILD_ONLY=1 BCFL_VM_IMG=$IMG vm/test-in-qemu.sh"
    t_build=$(date +%s)
    BCFL_VM_SSHD=1 BCFL_VM_DOCKER=$DOCKER BCFL_VM_BUILD_ONLY=1 BCFL_VM_IMG=$IMG BCFL_VM_CACHE=$CACHE \
      "$REPO/vm/test-in-qemu.sh" 8>&- || die "vm/test-in-qemu.sh could not make the image"
    cp "$CACHE/vmlinuz" "$DIR/vmlinuz"
    cp "$CACHE/initrd.img" "$DIR/initrd.img"
    step "image ready in $(($(date +%s) - t_build)) s"
  fi
  { [ -f "$IMG" ] && [ -f "$DIR/vmlinuz" ] && [ -f "$DIR/initrd.img" ]; } ||
    die "no image in $DIR: run without BCFL_CLUSTER_VM_BUILD=0"

  # 2. the key
  if [ ! -f "$KEY" ]; then
    ssh-keygen -q -t ed25519 -N '' -C "bcfl-cluster-vm@$(hostname)" -f "$KEY"
    note "new key pair $KEY"
  fi
  mkdir -p "$SHARE"
  install -m 644 "$KEY.pub" "$SHARE/authorized_keys"
  cat >"$SSH_CONFIG" <<EOF
# vm/cluster-vm.sh: ssh -F $SSH_CONFIG $NAME, or Include this file in /root/.ssh/config
Host $NAME $GUEST_IP
  HostName $GUEST_IP
  User root
  IdentityFile $KEY
  IdentitiesOnly yes
  BatchMode yes
  StrictHostKeyChecking accept-new
  UserKnownHostsFile $KNOWN_HOSTS
  LogLevel ERROR
EOF

  # Docker's data root: a disk of its own, kept across boots (the root image is -snapshot)
  local docker_args=() docker_append=
  if [ "$DOCKER" = 1 ]; then
    if [ ! -f "$DOCKER_DISK" ]; then
      truncate -s "${DOCKER_GB}G" "$DOCKER_DISK"
      mkfs.ext4 -q -F -L bcfl-docker "$DOCKER_DISK" || die "mkfs.ext4 $DOCKER_DISK failed"
      note "new Docker data disk $DOCKER_DISK (${DOCKER_GB} GB, sparse)"
    fi
    docker_args=(-drive "file=$DOCKER_DISK,format=raw,if=virtio,cache=unsafe,snapshot=off")
    docker_append="bcfl.docker=1"
  fi

  # 3. the tap
  remove_tap
  ip tuntap add dev "$TAP" mode tap
  ip addr add "$HOST_IP/24" dev "$TAP"
  ip link set dev "$TAP" up
  note "tap $TAP: $HOST_IP/24"

  # 4. boot
  step "booting: qemu-system-x86_64 -accel tcg -cpu max -m $MEM -smp $CPUS, $GUEST_IP; serial log $LOG"
  : >"$LOG"
  t_boot=$(date +%s)
  TMPDIR=$DIR qemu-system-x86_64 -name bcfl-cluster-vm -accel tcg -cpu max -m "$MEM" -smp "$CPUS" \
    -display none -no-reboot \
    -kernel "$DIR/vmlinuz" -initrd "$DIR/initrd.img" \
    -append "console=ttyS0 root=/dev/vda rw rootfstype=ext4 init=/usr/local/sbin/bcfl-cluster-vm-init panic=-1 fsck.mode=skip net.ifnames=0 loglevel=4 bcfl.addr=$GUEST_IP/24 bcfl.hostname=$NAME $docker_append ${BCFL_CLUSTER_VM_APPEND:-}" \
    -drive "file=$IMG,format=raw,if=virtio,cache=unsafe" -snapshot "${docker_args[@]}" \
    -virtfs "local,path=$SHARE,mount_tag=bcflkey,security_model=none,readonly=on,id=bcflkey" \
    -netdev "tap,id=net0,ifname=$TAP,script=no,downscript=no" \
    -device virtio-net-pci,netdev=net0,mac=52:54:00:77:00:02 \
    -device virtio-rng-pci \
    -serial "file:$LOG" -monitor none -daemonize -pidfile "$PIDFILE" \
    </dev/null >"$DIR/qemu.out" 2>&1 8>&- ||
    start_failed "qemu-system-x86_64 did not start: $(head -c 1000 "$DIR/qemu.out")"
  pid=$(qemu_pid) || start_failed "qemu exited at once: $(head -c 1000 "$DIR/qemu.out")"
  note "qemu PID $pid; waiting up to ${TIMEOUT}s for ssh root@$GUEST_IP"

  # 5. wait for ssh
  while :; do
    qemu_pid >/dev/null || start_failed "qemu exited before ssh worked"
    elapsed=$(($(date +%s) - t_boot))
    if ssh_ready; then break; fi
    [ "$elapsed" -lt "$TIMEOUT" ] || start_failed "no ssh after ${TIMEOUT}s (BCFL_CLUSTER_VM_TIMEOUT)"
    if [ $((elapsed - last)) -ge 15 ]; then
      last=$elapsed
      line=$(tr -d '\r' <"$LOG" | grep -a -v '^[[:space:]]*$' | tail -n 1 | cut -c1-100 || true)
      note "${elapsed}s: no ssh yet; serial: ${line:-(nothing yet)}"
    fi
    sleep 3
  done
  t_ready=$(date +%s)
  step "ssh ready $((t_ready - t_boot)) s after qemu started"
  if keys=$(ssh-keyscan -T 10 "$GUEST_IP" 2>/dev/null) && [ -n "$keys" ]; then
    printf '%s\n' "$keys" | sed "s/^$GUEST_IP /$GUEST_IP,$NAME /" >"$KNOWN_HOSTS"
    note "the guest's host keys: $KNOWN_HOSTS"
  else
    note "ssh-keyscan $GUEST_IP failed: $KNOWN_HOSTS not updated"
  fi

  if [ "$DOCKER" = 1 ]; then
    for _ in $(seq 100); do
      gssh 'docker info >/dev/null 2>&1' </dev/null && break
      sleep 3
    done
    if gssh 'docker info >/dev/null 2>&1' </dev/null; then
      step "dockerd ready in the guest ($(gssh "docker version --format '{{.Server.Version}}'" </dev/null))"
    else
      start_failed "dockerd did not answer in the guest (its log: vm/cluster-vm.sh ssh cat /var/log/dockerd.log)"
    fi
  fi

  # 6. the clock
  if clock=$(clock_session set); then
    note "clock set from the host's: $clock"
  else
    note "could not set the guest's clock: $clock"
  fi
  echo "cluster VM: running"
  print_info "$pid"
}

cmd_sync_tree() {
  qemu_pid >/dev/null || die "the cluster VM is not running (vm/cluster-vm.sh start)"
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
    tar --null --ignore-failed-read -T - -cf - 2>/dev/null) |
    gssh 'rm -rf /opt/bcfl/src.new && mkdir /opt/bcfl/src.new && tar -C /opt/bcfl/src.new -xf - &&
      rm -rf /opt/bcfl/src.old && mv /opt/bcfl/src /opt/bcfl/src.old &&
      mv /opt/bcfl/src.new /opt/bcfl/src && rm -rf /opt/bcfl/src.old' ||
    die "copying the working tree into the guest failed"
  note "working tree copied to the guest's /opt/bcfl/src"
}

cmd_load_image() {
  local tag=${1:-} t0
  [ -n "$tag" ] || die "load-image: which image? (vm/cluster-vm.sh load-image TAG)"
  [[ "$tag" =~ ^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?$ ]] || die "load-image: $tag is no image tag"
  need docker docker.io
  qemu_pid >/dev/null || die "the cluster VM is not running (BCFL_CLUSTER_VM_DOCKER=1 vm/cluster-vm.sh start)"
  gssh 'docker info >/dev/null 2>&1' </dev/null ||
    die "no Docker engine answers in the guest (start it with BCFL_CLUSTER_VM_DOCKER=1)"
  if gssh "docker image inspect $tag >/dev/null 2>&1" </dev/null; then
    note "the guest has $tag already"
    return 0
  fi
  docker image inspect "$tag" >/dev/null 2>&1 || die "this machine's engine has no $tag (bcfl image build)"
  t0=$(date +%s)
  step "docker save $tag | ssh guest docker load"
  set -o pipefail
  docker save "$tag" | gssh 'docker load -q' || die "loading $tag into the guest failed"
  step "$tag loaded into the guest in $(($(date +%s) - t0)) s"
}

cmd_stop() {
  local pid t0 asked=0
  lock
  if ! pid=$(qemu_pid); then
    echo "cluster VM: not running"
    rm -f "$PIDFILE"
    remove_tap
    return 0
  fi
  t0=$(date +%s)
  step "stopping the cluster VM (qemu PID $pid)"
  # bcfl-poweroff returns at once and powers off 1 s later (ssh ends before the guest is gone)
  if [ -f "$KEY" ] && timeout 30 ssh "${SSH_OPTS[@]}" "root@$GUEST_IP" /usr/local/sbin/bcfl-poweroff \
    </dev/null >/dev/null 2>&1; then
    asked=1
    note "bcfl-poweroff sent; waiting up to ${GRACE}s for qemu to exit"
    while kill -0 "$pid" 2>/dev/null && [ $(($(date +%s) - t0)) -lt "$GRACE" ]; do sleep 1; done
  else
    note "the guest does not answer ssh: killing qemu"
  fi
  if kill -0 "$pid" 2>/dev/null; then
    [ "$asked" = 0 ] || note "qemu still running after ${GRACE}s: SIGTERM"
    kill "$pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then
      note "SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
      sleep 1
    fi
  fi
  rm -f "$PIDFILE"
  remove_tap
  step "cluster VM stopped in $(($(date +%s) - t0)) s"
}

case "$CMD" in
  start) cmd_start ;;
  status) cmd_status ;;
  ssh) cmd_ssh "$@" ;;
  clock) cmd_clock check ;;
  sync-clock) cmd_clock set ;;
  sync-tree) cmd_sync_tree ;;
  stop) cmd_stop ;;
  load-image) cmd_load_image "$@" ;;
esac
