#!/bin/bash
# Build the initramfs (OUT_DIR/initrd.img; the kernel is the test guest's) of the power-cut campaign's VM (crates/reprise/tests/
# powercut.rs): the test guest's kernel and busybox, with the `reprise`
# binary, qemu-img and their libraries, so that a whole daemon runs inside a
# VM whose power the test can cut (kill -9 of that VM's QEMU: the guest's
# page cache, and with it every write not yet synced, is lost).
#
# The VM mounts its disk /dev/vda (ext4, made by the test) on /data, brings
# up eth0 for QEMU's user network (10.0.2.15), runs
# `reprise serve --config /data/reprise.toml`, and prints
# "powercut: admin-key KEY" on its serial port once the daemon has made it.
#
# Usage: tests/powercut/build.sh OUT_DIR REPRISE_BINARY
# Needs the test guest built first (tests/guest/build.sh target/test-guest).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$1
BIN=$2
GUEST=${GUEST:-$HERE/../../target/test-guest}
[ -f "$GUEST/vmlinuz" ] || { echo "no test guest in $GUEST: run tests/guest/build.sh" >&2; exit 1; }
mkdir -p "$OUT"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT

dpkg-deb --fsys-tarfile "$GUEST"/debs/linux-image-*.deb | tar -x -C "$T" --wildcards '*/virtio*.ko' '*/failover.ko' '*/net_failover.ko'
dpkg -x "$GUEST"/debs/busybox-static_*.deb "$T/bb"

R=$T/root
mkdir -p $R/{bin,sbin,usr/bin,lib/modules,etc,proc,sys,dev,run,tmp,data}
cp "$T/bb/bin/busybox" $R/bin/busybox
MODS="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover virtio_net"
for m in $MODS; do cp "$(find "$T/lib/modules" -name "$m.ko" | head -1)" $R/lib/modules/; done
# The daemon without its debug information (a third of the size).
objcopy --strip-debug "$BIN" $R/usr/bin/reprise
# qemu-img runs under prlimit (a memory bound on hostile images).
cp "$(command -v qemu-img)" "$(command -v prlimit)" $R/usr/bin/
for exe in $R/usr/bin/reprise $R/usr/bin/qemu-img $R/usr/bin/prlimit; do
  for l in $(ldd "$exe" | grep -o '/[^ ]*'); do mkdir -p "$R$(dirname "$l")"; cp -Ln "$l" "$R$l"; done
done

cat > $R/init <<INIT
#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $MODS; do insmod /lib/modules/\$m.ko; done
for i in \$(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /data || echo "powercut: cannot mount /dev/vda"
ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
export PATH=/usr/bin:/bin:/sbin
( while [ ! -s /data/reprise/admin.key ]; do sleep 0.1; done; echo "powercut: admin-key \$(cat /data/reprise/admin.key)" ) &
setsid reprise serve --config /data/reprise.toml </dev/null >/dev/console 2>&1 &
exec /bin/busybox init
INIT
printf '::respawn:/bin/sleep 3600\n' > $R/etc/inittab
chmod 755 $R/init
printf 'root:x:0:0:root:/root:/bin/sh\n' > $R/etc/passwd; printf 'root:x:0:\n' > $R/etc/group
( cd $R && find . | sort | "$T/bb/bin/busybox" cpio -o -H newc 2>/dev/null ) | gzip -1 > "$OUT/initrd.img"
echo "power-cut VM built in $OUT"
