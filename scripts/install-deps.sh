#!/bin/bash
# Install what reprise and its tests need on Debian 12: QEMU 7.2 (system
# emulator, qemu-img from the same release, guest agent), the tools that
# build the test guest, and Chromium and Node.js for the console's browser
# tests. Idempotent: does nothing when all is in place.
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-ga >/dev/null || [ -x /usr/sbin/qemu-ga ] || need+=(qemu-guest-agent)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v lz4 >/dev/null || need+=(lz4)
command -v sha256sum >/dev/null || need+=(coreutils)
command -v curl >/dev/null || need+=(curl)
# Python tools for the tests go in a virtualenv (scripts/python-deps.sh).
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
# The console's browser tests: Debian's Chromium, driven from Node.js
# (machines of this kind come with Node.js 20; Debian's is older, and
# scripts/console-deps.sh says so).
[ -x /usr/bin/chromium ] || need+=(chromium)
node_pkgs=()
command -v npm >/dev/null || { node_pkgs=(nodejs npm); need+=(nodejs); }
# PostgreSQL 15 for the region's catalog (tests run a private server).
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
# gcc with static glibc builds the test guest's benchmark tool.
command -v gcc >/dev/null && [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(gcc libc6-dev)
# g++ builds libFuzzer for the fuzz targets (scripts/fuzz.sh).
command -v g++ >/dev/null || need+=(g++)
# objcopy strips the daemon put into the power-cut campaign's VM.
command -v objcopy >/dev/null || need+=(binutils)
# qemu-img must come from the same QEMU release as qemu-system-x86: a newer
# preinstalled qemu-utils is replaced (installing qemu-system-x86 removes it).
sys_v=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
img_v=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
if [ ${#need[@]} -eq 0 ] && [ -n "$sys_v" ] && [ "$sys_v" = "$img_v" ]; then
  exit 0
fi
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
[ -n "$v" ] && [ "$v" != "(none)" ] || { echo "qemu-system-x86 is not available from apt" >&2; exit 1; }
$SUDO apt-get install -y -q --allow-downgrades \
  "qemu-system-x86=$v" "qemu-utils=$v" qemu-guest-agent e2fsprogs lz4 coreutils curl gcc g++ libc6-dev binutils python3-venv \
  chromium postgresql "${node_pkgs[@]}"
qemu-system-x86_64 --version | head -1
qemu-img --version | head -1
chromium --version
