#!/bin/bash
# A real S3 server for the tests: Garage on loopback, one node, or a
# cluster of REPRISE_S3_NODES nodes (a region's store: replication 3, one
# node per zone).
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
# Nodes of the cluster (one per zone, each object on every node); node i
# listens on S3_PORT + 10 × i (S3), + 1 (RPC), + 3 (admin).
NODES=${REPRISE_S3_NODES:-1}
# The prefix of the variables DIR/env exports (the tests read a single node
# from REPRISE_TEST_S3_*, a region's cluster from REPRISE_TEST_CLUSTER_*).
ENV=${REPRISE_S3_ENV:-REPRISE_TEST_S3}

install() {
  [ -x "$GARAGE" ] && return 0
  command -v cargo >/dev/null || { echo "cargo is needed to build Garage" >&2; exit 1; }
  echo "building Garage $GARAGE_VERSION (once per machine; about 10 minutes)..." >&2
  local started; started=$(date +%s)
  cargo install garage --version "$GARAGE_VERSION" --locked --quiet \
    --no-default-features --features bundled-libs,sqlite --root "$GARAGE_ROOT"
  echo "Garage built in $(( $(date +%s) - started ))s" >&2
}

# Write node $1's config (its ports are S3_PORT + 10 × $1) under $DIR/node$1.
node_config() {
  local i=$1 base=$((S3_PORT + 10 * $1))
  mkdir -p "$DIR/node$i"
  cat > "$DIR/node$i/garage.toml" <<TOML
metadata_dir = "$DIR/node$i/meta"
data_dir = "$DIR/node$i/data"
db_engine = "sqlite"
replication_factor = $NODES
rpc_bind_addr = "127.0.0.1:$((base + 1))"
rpc_public_addr = "127.0.0.1:$((base + 1))"
rpc_secret = "$RPC_SECRET"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$base"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$((base + 3))"
TOML
}

# Start node $1 (its config written before).
node_start() {
  RUST_LOG=warn nohup "$GARAGE" -c "$DIR/node$1/garage.toml" server > "$DIR/node$1/garage.log" 2>&1 &
  echo $! > "$DIR/node$1/pid"
}

start() {
  install
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  if [ -f "$DIR/node0/pid" ] && kill -0 "$(cat "$DIR/node0/pid")" 2>/dev/null && [ -f "$DIR/env" ]; then
    return 0
  fi
  rm -rf "$DIR"/node* "$DIR/env"
  RPC_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  local i
  for i in $(seq 0 $((NODES - 1))); do
    node_config "$i"
    node_start "$i"
  done
  g() { "$GARAGE" -c "$DIR/node0/garage.toml" "$@"; }
  for _ in $(seq 100); do
    g status >/dev/null 2>&1 && break
    sleep 0.1
  done
  # One node per zone (dc1, dc2, …): with as many nodes as copies, every
  # object is on every node, and a write needs a quorum of them.
  for i in $(seq 0 $((NODES - 1))); do
    local id
    id=$("$GARAGE" -c "$DIR/node$i/garage.toml" node id -q 2>/dev/null)
    for _ in $(seq 100); do
      [ -n "$id" ] && break
      sleep 0.1
      id=$("$GARAGE" -c "$DIR/node$i/garage.toml" node id -q 2>/dev/null || true)
    done
    [ "$i" -gt 0 ] && g node connect "$id" >/dev/null
    g layout assign -z "dc$((i + 1))" -c 1G "${id%%@*}" >/dev/null
  done
  g layout apply --version 1 >/dev/null
  g bucket create reprise >/dev/null
  g key create reprise-key >/dev/null
  g bucket allow --read --write --owner reprise --key reprise-key >/dev/null
  local info id secret endpoints=""
  info=$(g key info --show-secret reprise-key)
  id=$(echo "$info" | awk -F': *' '/Key ID/{print $2; exit}')
  secret=$(echo "$info" | awk -F': *' '/Secret key/{print $2; exit}')
  for i in $(seq 0 $((NODES - 1))); do
    endpoints="$endpoints${endpoints:+ }http://127.0.0.1:$((S3_PORT + 10 * i))"
  done
  cat > "$DIR/env" <<ENV
export ${ENV}_ENDPOINT=http://127.0.0.1:$S3_PORT
export ${ENV}_BUCKET=reprise
export ${ENV}_REGION=garage
export ${ENV}_ACCESS_KEY_ID=$id
export ${ENV}_SECRET_ACCESS_KEY=$secret
export ${ENV}_NODES="$endpoints"
export ${ENV}_DIR=$DIR
export ${ENV}_GARAGE=$GARAGE
ENV
  # The API answers once the layout is live.
  for i in $(seq 0 $((NODES - 1))); do
    for _ in $(seq 100); do
      curl -s -o /dev/null "http://127.0.0.1:$((S3_PORT + 10 * i))" && break
      sleep 0.1
    done
  done
}

stop() {
  local pid
  for pid in "$DIR"/node*/pid; do
    [ -f "$pid" ] || continue
    kill "$(cat "$pid")" 2>/dev/null || true
    rm -f "$pid"
  done
}

cmd=${1:-}
DIR=${2:-target/s3}
case "$cmd" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
