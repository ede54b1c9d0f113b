#!/bin/bash
# A real S3 server for the tests: a single-node Garage on loopback.
#
#   scripts/s3.sh install        build Garage once (cached under ~/.cache)
#   scripts/s3.sh start DIR      start it with its state in DIR, make a bucket
#                                and a key, write DIR/env (REPRISE_TEST_S3_*)
#   scripts/s3.sh stop DIR
#
# Garage is built from crates.io with only the features a test server needs
# (SQLite metadata), which roughly halves its build time.
set -euo pipefail
GARAGE_VERSION=2.5.0
GARAGE_ROOT=${GARAGE_ROOT:-$HOME/.cache/reprise-garage-$GARAGE_VERSION-sqlite}
GARAGE=$GARAGE_ROOT/bin/garage
S3_PORT=${REPRISE_S3_PORT:-3900}
RPC_PORT=$((S3_PORT + 1))
ADMIN_PORT=$((S3_PORT + 3))

install() {
  [ -x "$GARAGE" ] && return 0
  command -v cargo >/dev/null || { echo "cargo is needed to build Garage" >&2; exit 1; }
  echo "building Garage $GARAGE_VERSION (once per machine; about 10 minutes)..." >&2
  local started; started=$(date +%s)
  cargo install garage --version "$GARAGE_VERSION" --locked --quiet \
    --no-default-features --features bundled-libs,sqlite --root "$GARAGE_ROOT"
  echo "Garage built in $(( $(date +%s) - started ))s" >&2
}

g() { "$GARAGE" -c "$DIR/garage.toml" "$@"; }

start() {
  install
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  if [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null && [ -f "$DIR/env" ]; then
    return 0
  fi
  rm -rf "$DIR/meta" "$DIR/data" "$DIR/env"
  cat > "$DIR/garage.toml" <<TOML
metadata_dir = "$DIR/meta"
data_dir = "$DIR/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
TOML
  RUST_LOG=warn nohup "$GARAGE" -c "$DIR/garage.toml" server > "$DIR/garage.log" 2>&1 &
  echo $! > "$DIR/pid"
  for _ in $(seq 100); do
    g status >/dev/null 2>&1 && break
    sleep 0.1
  done
  local node
  node=$(g node id -q | cut -d@ -f1)
  g layout assign -z dc1 -c 1G "$node" >/dev/null
  g layout apply --version 1 >/dev/null
  g bucket create reprise >/dev/null
  local info
  info=$(g key create reprise-key)
  g bucket allow --read --write --owner reprise --key reprise-key >/dev/null
  info=$(g key info --show-secret reprise-key)
  local id secret
  id=$(echo "$info" | awk -F': *' '/Key ID/{print $2; exit}')
  secret=$(echo "$info" | awk -F': *' '/Secret key/{print $2; exit}')
  cat > "$DIR/env" <<ENV
export REPRISE_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export REPRISE_TEST_S3_BUCKET=reprise
export REPRISE_TEST_S3_REGION=garage
export REPRISE_TEST_S3_ACCESS_KEY_ID=$id
export REPRISE_TEST_S3_SECRET_ACCESS_KEY=$secret
ENV
  # The API answers once the layout is live.
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$S3_PORT" && break
    sleep 0.1
  done
}

stop() {
  [ -f "$DIR/pid" ] || return 0
  kill "$(cat "$DIR/pid")" 2>/dev/null || true
  rm -f "$DIR/pid"
}

cmd=${1:-}
DIR=${2:-target/s3}
case "$cmd" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
