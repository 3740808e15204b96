#!/bin/bash
# PID 1 of the test VM that vm/test-in-qemu.sh boots (installed as /usr/local/sbin/bcfl-vm-init,
# kernel argument init=...). Mounts what Mininet needs, mounts the host's 9p share "results"
# at /results, runs vm/in-vm-test.sh, prints `BCFL-VM-RESULT: PASS|FAIL` on the console and
# powers the VM off. No systemd: less to boot under software emulation.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb

mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null || true
hostname bcfl-vm
ip link set lo up
# systemd would create /dev/net/tun as a static node (Open vSwitch's user-space datapath needs it)
modprobe tun 2>/dev/null

finish() {
  echo "BCFL-VM-RESULT: $1"
  sync
  umount /results 2>/dev/null
  echo o >/proc/sysrq-trigger  # power off (qemu exits)
  sleep 30
}

mkdir -p /results
modprobe 9pnet_virtio 2>/dev/null
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results /results; then
  echo "bcfl-vm-init: cannot mount the 9p share 'results'; writing to /root/results"
  mkdir -p /root/results
  mount --bind /root/results /results
fi

pytest_too=$(grep -o 'bcfl.pytest=[a-z0-9]*' /proc/cmdline | cut -d= -f2)
only=$(grep -o 'bcfl.only=[a-z]*' /proc/cmdline | cut -d= -f2)
gate=1
grep -qw 'bcfl.fidelity_gate=0' /proc/cmdline && gate=0
docker=0
grep -qw 'bcfl.docker=1' /proc/cmdline && docker=1
pytest_k=$(grep -o 'bcfl.pytest_k=[A-Za-z0-9_]*' /proc/cmdline | cut -d= -f2)
BCFL_VM_ONLY=$only BCFL_VM_PYTEST=${pytest_too:-0} BCFL_VM_FIDELITY_GATE=$gate BCFL_VM_DOCKER=$docker \
  BCFL_VM_PYTEST_K=$pytest_k bash /opt/bcfl/src/vm/in-vm-test.sh 2>&1 | tee /results/in-vm.log
if [ "${PIPESTATUS[0]}" = 0 ]; then
  echo PASS >/results/result.txt
  finish PASS
else
  echo FAIL >/results/result.txt
  finish FAIL
fi
