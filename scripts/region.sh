#!/bin/bash
# A region of three hosts on one machine, to try it out: a private
# PostgreSQL (the catalog), a three-node Garage cluster (the store: one node
# per zone, replication 3) and three reprise daemons, host1..host3, each
# serving its zone (zone1..zone3) and talking to its own Garage node, all on
# loopback. On three machines the same settings apply, one daemon and one
# Garage node per machine (docs/region.md).
#
#   scripts/region.sh start DIR   start everything with its state in DIR;
#                                 prints each daemon's URL and the admin key
#   scripts/region.sh stop DIR    stop the daemons, Garage and PostgreSQL
#
# Ports: daemons 7481-7483, Garage 3970/3980/3990 (S3), PostgreSQL 55442.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:?usage: region.sh start|stop DIR}
DIR=${2:?usage: region.sh start|stop DIR}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
# The daemon: REPRISE_BIN, or this checkout's, built now.
BIN=${REPRISE_BIN:-}
export REPRISE_PG_PORT=55442 REPRISE_S3_PORT=3970 REPRISE_S3_NODES=3 REPRISE_S3_ENV=REGION_S3

stop() {
  local pid
  for pid in "$DIR"/host*/pid; do
    [ -f "$pid" ] || continue
    kill "$(cat "$pid")" 2>/dev/null || true
    rm -f "$pid"
  done
  scripts/s3.sh stop "$DIR/garage"
  scripts/postgres.sh stop "$DIR/pg"
}

start() {
  if [ -z "$BIN" ]; then
    cargo build --release --locked -p reprise
    BIN=target/release/reprise
  fi
  scripts/postgres.sh start "$DIR/pg"
  scripts/s3.sh start "$DIR/garage"
  # shellcheck source=/dev/null
  source "$DIR/pg/env"
  # shellcheck source=/dev/null
  source "$DIR/garage/env"
  # Every daemon of a region has the same secret.
  [ -f "$DIR/region.key" ] || (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/region.key")
  local i endpoints
  read -r -a endpoints <<< "$REGION_S3_NODES"
  for i in 1 2 3; do
    local home="$DIR/host$i"
    mkdir -p "$home"
    cat > "$home/reprise.toml" <<TOML
data_dir = "$home/data"
listen = "127.0.0.1:748$i"
default_zone = "zone$i"

[catalog]
url = "$REPRISE_TEST_POSTGRES"

[host]
name = "host$i"
zones = ["zone$i"]

[region]
store = "s3"
key_file = "$DIR/region.key"

[region.s3]
endpoint = "${endpoints[$((i - 1))]}"
bucket = "$REGION_S3_BUCKET"
region = "$REGION_S3_REGION"
access_key_id = "$REGION_S3_ACCESS_KEY_ID"
secret_access_key = "$REGION_S3_SECRET_ACCESS_KEY"
TOML
    if [ -f "$home/pid" ] && kill -0 "$(cat "$home/pid")" 2>/dev/null; then continue; fi
    nohup "$BIN" serve --config "$home/reprise.toml" > "$home/daemon.log" 2>&1 &
    echo $! > "$home/pid"
    # One at a time: the first makes the admin account and the schema.
    for _ in $(seq 100); do
      curl -sf "http://127.0.0.1:748$i/api/v1/health" >/dev/null && break
      kill -0 "$(cat "$home/pid")" 2>/dev/null || { cat "$home/daemon.log" >&2; exit 1; }
      sleep 0.1
    done
    echo "host$i: http://127.0.0.1:748$i (zone$i; log $home/daemon.log)"
  done
  echo "admin key: $DIR/host1/data/admin.key"
  echo "try: REPRISE_URL=http://127.0.0.1:7482 REPRISE_API_KEY=\$(cat $DIR/host1/data/admin.key) $BIN host list"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
