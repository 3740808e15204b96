#!/bin/bash
# PID 1 of the cluster VM that vm/cluster-vm.sh boots (installed by vm/test-in-qemu.sh as
# /usr/local/sbin/bcfl-cluster-vm-init, kernel argument init=...). No systemd: mounts what
# Mininet needs, loads tun and the GRE modules, configures eth0 from the kernel argument
# bcfl.addr=A.B.C.D/N, takes root's authorized_keys from the host's read-only 9p share
# "bcflkey", starts sshd and then only reaps orphans until the VM is powered off
# (`poweroff` / `bcfl-poweroff` over ssh: sync, then sysrq o; qemu exits).
# Kernel arguments: bcfl.addr=172.31.77.2/24 (default), bcfl.hostname=bcfl-vm2 (default);
# bcfl.docker=1: mount the disk labelled bcfl-docker at /var/lib/docker and start dockerd
# (log /var/log/dockerd.log).
VENV_PATH=/opt/bcfl/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH=$VENV_PATH
export HOME=/root LANG=C.UTF-8 TERM=dumb

log() { echo "bcfl-cluster-vm-init: $*"; }

mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null || true

arg() {  # arg NAME DEFAULT: the value of the kernel argument NAME=..., else DEFAULT
  local v
  v=$(tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -n 1)
  echo "${v:-$2}"
}
ADDR=$(arg bcfl.addr 172.31.77.2/24)
NAME=$(arg bcfl.hostname bcfl-vm2)

hostname "$NAME"
echo "$NAME" >/etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 %s\n%s %s\n::1 localhost ip6-localhost ip6-loopback\n' \
  "$NAME" "${ADDR%/*}" "$NAME" >/etc/hosts
ip link set lo up
# systemd would create /dev/net/tun as a static node; the GRE modules for Mininet Cluster
# Edition's GRE links (no udev either: nothing loads them on demand for `ip link add`)
for m in tun gre ip_gre ip_tunnel virtio_net 9pnet_virtio 9p; do
  modprobe "$m" 2>/dev/null || log "modprobe $m failed"
done

# --- network -----------------------------------------------------------------------------
for _ in $(seq 50); do
  [ -e /sys/class/net/eth0 ] && break
  sleep 0.2
done
if ! { ip link set eth0 up && ip addr add "$ADDR" dev eth0; }; then
  log "cannot configure eth0 with $ADDR"
fi
log "eth0 $ADDR"

# --- power off ---------------------------------------------------------------------------
cat >/usr/local/sbin/bcfl-poweroff <<'EOF'
#!/bin/sh
# Power the cluster VM off (no systemd here): sync, then sysrq o; qemu exits. Detached and
# 1 s late, so that an ssh session that runs it ends normally before the VM is gone.
sync
setsid -f sh -c 'sleep 1; sync; echo o >/proc/sysrq-trigger' </dev/null >/dev/null 2>&1
echo "bcfl-poweroff: powering off in 1 s"
EOF
chmod 755 /usr/local/sbin/bcfl-poweroff
for c in poweroff halt; do ln -sf bcfl-poweroff "/usr/local/sbin/$c"; done

# --- sshd --------------------------------------------------------------------------------
mkdir -p /root/.ssh /run/bcfl-key
chmod 700 /root/.ssh
if mount -t 9p -o trans=virtio,version=9p2000.L,ro bcflkey /run/bcfl-key; then
  if [ -s /run/bcfl-key/authorized_keys ]; then
    install -m 600 /run/bcfl-key/authorized_keys /root/.ssh/authorized_keys
  else
    log "no authorized_keys in the 9p share bcflkey: nobody can log in"
  fi
  umount /run/bcfl-key
else
  log "cannot mount the 9p share bcflkey: nobody can log in"
fi
ssh-keygen -A >/dev/null
mkdir -p /etc/ssh/sshd_config.d /run/sshd
chmod 755 /run/sshd
cat >/etc/ssh/sshd_config.d/bcfl.conf <<EOF
# written by bcfl-cluster-vm-init (vm/cluster-vm-init.sh)
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitTunnel yes
UseDNS no
MaxSessions 200
MaxStartups 200:30:400
SetEnv PATH=$VENV_PATH
EOF
# pam_env reads /etc/environment; login shells reset PATH in /etc/profile, then read profile.d
echo "PATH=\"$VENV_PATH\"" >/etc/environment
cat >/etc/profile.d/bcfl-venv.sh <<'EOF'
case ":$PATH:" in *:/opt/bcfl/venv/bin:*) ;; *) PATH=/opt/bcfl/venv/bin:$PATH ;; esac
EOF
if [ -x /usr/sbin/sshd ]; then
  if /usr/sbin/sshd -E /var/log/sshd.log; then
    log "sshd started"
  else
    log "sshd failed: $(tail -n 3 /var/log/sshd.log)"
  fi
else
  log "no /usr/sbin/sshd in the image (built without BCFL_VM_SSHD=1?)"
fi
# --- dockerd (bcfl.docker=1) ---------------------------------------------------------------
if [ "$(arg bcfl.docker 0)" = 1 ]; then
  mkdir -p /var/lib/docker
  if ! mount -L bcfl-docker /var/lib/docker 2>/dev/null && ! mount /dev/vdb /var/lib/docker; then
    log "cannot mount the Docker data disk: dockerd uses the root image's /var/lib/docker"
  fi
  if command -v dockerd >/dev/null; then
    setsid -f dockerd >/var/log/dockerd.log 2>&1 </dev/null
    log "dockerd started"
  else
    log "no dockerd in the image (built without BCFL_VM_DOCKER=1?)"
  fi
fi
echo "BCFL-CLUSTER-VM: READY $ADDR"

# --- PID 1: reap whatever is reparented to us, until powered off -------------------------
trap '' TERM INT HUP
while :; do
  sleep 3600 &
  wait $! 2>/dev/null
done
