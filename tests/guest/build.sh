#!/bin/bash
# Build the tiny test guest of reprise's end-to-end tests from Debian packages,
# in seconds and without installing anything as root:
#   vmlinux (uncompressed kernel for direct PVH boot) or vmlinuz, initrd.img
#   (busybox + the host's qemu-ga and its libraries), data.qcow2 (64 MiB ext4).
# The guest mounts /dev/vda (if any; formatted first when blank) on /mnt/data, runs qemu-ga on the
# virtio-serial port org.qemu.guest_agent.0, and offers /bin/writer (see below).
# Needs: apt-get, dpkg-deb, mkfs.ext4, qemu-img, qemu-ga, python3, lz4, gcc (static glibc).
# Usage: tests/guest/build.sh [OUT_DIR]   (default: target/test-guest)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-${OUT:-$HERE/../../target/test-guest}}
DEBS=${DEBS:-$OUT/debs}
DATA_MB=${DATA_MB:-64}
QGA=$(command -v qemu-ga || echo /usr/sbin/qemu-ga)
[ -x "$QGA" ] || { echo "qemu-ga not found: apt-get install qemu-guest-agent" >&2; exit 1; }
KPKG=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$KPKG" ] || { echo "cannot resolve linux-image-cloud-amd64: run apt-get update" >&2; exit 1; }
mkdir -p "$DEBS" "$OUT"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT

# 1. Fetch and unpack the kernel and busybox packages (no install, no scripts).
( cd "$DEBS"
  ls "$KPKG"_*.deb >/dev/null 2>&1 || apt-get download -q "$KPKG"
  ls busybox-static_*.deb >/dev/null 2>&1 || apt-get download -q busybox-static
) 2>&1 | grep -v 'Download is performed unsandboxed' || true
dpkg-deb --fsys-tarfile "$DEBS/$KPKG"_*.deb | tar -x -C "$T" --wildcards './boot/vmlinuz-*' '*/virtio*.ko'
dpkg -x "$DEBS"/busybox-static_*.deb "$T/bb"
cp "$T"/boot/vmlinuz-* "$OUT/vmlinuz"
# An uncompressed ELF kernel boots ~0.4 s faster under TCG (PVH entry, no
# decompressor). Debian's cloud kernels are LZ4 (legacy frame) inside bzImage.
rm -f "$OUT/vmlinux"
if command -v lz4 >/dev/null; then
  off=$(python3 -c 'import sys;print(open(sys.argv[1],"rb").read().find(b"\x02\x21\x4c\x18"))' "$OUT/vmlinuz")
  if [ "$off" -ge 0 ]; then
    tail -c +$((off+1)) "$OUT/vmlinuz" | lz4 -dcq > "$OUT/vmlinux" 2>/dev/null || true
    [ "$(head -c4 "$OUT/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || rm -f "$OUT/vmlinux"
  fi
fi

# 2. The initramfs.
R=$T/root
mkdir -p $R/{bin,sbin,usr/bin,usr/sbin,lib/modules,etc,proc,sys,dev,run,tmp,mnt/data,root}
mkdir -p $R/var && ln -s ../run $R/var/run
cp "$T/bb/bin/busybox" $R/bin/busybox
MODS="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk virtio_console"
for m in $MODS; do cp "$(find "$T/lib/modules" -name "$m.ko" | head -1)" $R/lib/modules/; done
cp "$QGA" $R/usr/sbin/qemu-ga
for l in $(ldd "$QGA" | grep -o '/[^ ]*'); do mkdir -p "$R$(dirname "$l")"; cp -L "$l" "$R$l"; done
mkdir -p $R/lib64 && cp -L /lib64/ld-linux-x86-64.so.2 $R/lib64/

cat > $R/init <<INIT
#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/virtio-ports /run/qemu; mount -t devpts devpts /dev/pts
hostname tinyguest
for m in $MODS; do insmod /lib/modules/\$m.ko; done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.1; done
# A blank first disk (a new reprise volume) gets an ext2 filesystem first.
if [ -b /dev/vda ]; then
  magic=\$(dd if=/dev/vda bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1 | tr -d ' \\n')
  [ "\$magic" = 53ef ] || { mke2fs -q -L tinydata /dev/vda && echo "tinyguest: formatted blank /dev/vda"; }
  mount -o rw /dev/vda /mnt/data && echo "tinyguest: /dev/vda mounted on /mnt/data"
fi
for a in \$(cat /proc/cmdline); do case \$a in writer=*) setsid /bin/writer "\${a#writer=}" </dev/null >/dev/null 2>&1 & ;; esac; done
exec /bin/busybox init
INIT
cat > $R/etc/inittab <<'TAB'
::respawn:/sbin/qga-start
ttyS0::respawn:-/bin/sh
::ctrlaltdel:/bin/poweroff -f
::shutdown:/bin/sync
TAB
# No udev: link /dev/virtio-ports/<name> by hand once the ports appear.
cat > $R/sbin/qga-start <<'QS'
#!/bin/sh
for p in /sys/class/virtio-ports/vport*; do [ -e $p/name ] && ln -sf ../${p##*/} /dev/virtio-ports/$(cat $p/name); done
[ -e /dev/virtio-ports/org.qemu.guest_agent.0 ] || { sleep 0.1; exit 1; }
exec /usr/sbin/qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 -t /run/qemu -l /run/qemu-ga.log
QS
# qemu-ga's guest-shutdown runs /sbin/shutdown, which busybox lacks.
cat > $R/sbin/shutdown <<'SD'
#!/bin/sh
sync; case " $* " in *" -r "*) reboot -f ;; *) poweroff -f ;; esac
SD
# /bin/writer FILE [DELAY]: appends fsync'ed "SEQ n" lines to FILE, going on
# from the last line; on a block device, 512-byte "SEQ n" records round robin.
cat > $R/bin/writer <<'WR'
#!/bin/sh
f=${1:-/mnt/data/pattern.log}; delay=${2:-0}; n=0
echo $$ > /run/writer.pid
if [ -b "$f" ]; then
  nrec=$(( $(blockdev --getsize64 "$f") / 512 ))
  while :; do printf 'SEQ %012d\n' $n | dd of="$f" bs=512 seek=$((n % nrec)) conv=sync,notrunc,fsync oflag=direct status=none
    n=$((n+1)); [ "$delay" = 0 ] || sleep $delay; done
fi
[ -f "$f" ] && n=$(tail -n1 "$f" | awk '{print $2+1}')
while :; do
  printf 'SEQ %08d\n' $n | dd of="$f" conv=notrunc,fsync oflag=append status=none
  n=$((n+1)); [ "$delay" = 0 ] || sleep $delay
done
WR
# /bin/randread DEVICE SECONDS: random 4 KiB direct reads, for the benchmarks.
gcc -static -O2 -o $R/bin/randread "$HERE/randread.c"
chmod 755 $R/init $R/sbin/shutdown $R/sbin/qga-start $R/bin/writer
echo tinyguest > $R/etc/hostname
printf 'root:x:0:0:root:/root:/bin/sh\n' > $R/etc/passwd; printf 'root:x:0:\n' > $R/etc/group

# 3. Pack the initramfs (busybox cpio) and make the data disk.
( cd $R && find . | sort | "$T/bb/bin/busybox" cpio -o -H newc 2>/dev/null ) | gzip -1 > "$OUT/initrd.img"
truncate -s ${DATA_MB}M "$T/data.raw"
mkfs.ext4 -q -F -L tinydata -E lazy_itable_init=0,lazy_journal_init=0 "$T/data.raw"
qemu-img convert -f raw -O qcow2 -o cluster_size=65536 "$T/data.raw" "$OUT/data.qcow2"
# The stamp is the hash of this script and the sources it builds: the tests
# rebuild the guest when it changes.
cat "$HERE/build.sh" "$HERE/randread.c" | sha256sum | cut -d' ' -f1 > "$OUT/build.stamp"
echo "test guest built in $OUT"
