#!/bin/bash
# A private PostgreSQL on loopback, for the tests and for trying a region
# on one machine: Debian's PostgreSQL 15 binaries on a data directory of
# its own (the system's cluster, if any, is left alone).
#
#   scripts/postgres.sh start DIR   initdb once (its files in /tmp/reprise-pg-*,
#                                   one per DIR), start it on
#                                   127.0.0.1:$REPRISE_PG_PORT (55432), make
#                                   the database "reprise", write DIR/env
#                                   (REPRISE_TEST_POSTGRES=postgres://…)
#   scripts/postgres.sh stop DIR
#
# Run as root, the server runs as the "postgres" user (it refuses root).
# Only loopback connections are accepted, without a password.
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin
PORT=${REPRISE_PG_PORT:-55432}
cmd=${1:?usage: postgres.sh start|stop DIR}
DIR=${2:?usage: postgres.sh start|stop DIR}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
# The server's files live under /tmp, not in DIR: run as root, the server
# runs as "postgres", which may not enter DIR (a checkout under /root).
STATE=/tmp/reprise-pg-$(printf %s "$DIR" | sha256sum | cut -c1-12)

as_owner() {
  # From a directory the owner can enter (DIR's may be closed to it).
  if [ "$(id -u)" = 0 ]; then (cd "$STATE" && runuser -u postgres -- "$@"); else "$@"; fi
}

case $cmd in
start)
  [ -x "$BIN/initdb" ] || { echo "PostgreSQL 15 is missing: run scripts/install-deps.sh" >&2; exit 1; }
  mkdir -p "$STATE"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$STATE"; fi
  if [ ! -f "$STATE/data/PG_VERSION" ]; then
    as_owner "$BIN/initdb" -D "$STATE/data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  if ! as_owner "$BIN/pg_ctl" -D "$STATE/data" status >/dev/null 2>&1; then
    as_owner "$BIN/pg_ctl" -D "$STATE/data" -l "$STATE/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $STATE" start >/dev/null
  fi
  if ! as_owner "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'reprise'" | grep -q 1; then
    as_owner "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres reprise
  fi
  echo "export REPRISE_TEST_POSTGRES=postgres://postgres@127.0.0.1:$PORT/reprise" >"$DIR/env"
  ;;
stop)
  if [ -f "$STATE/data/PG_VERSION" ]; then
    as_owner "$BIN/pg_ctl" -D "$STATE/data" -m fast stop >/dev/null 2>&1 || true
  fi
  ;;
*)
  echo "usage: postgres.sh start|stop DIR" >&2
  exit 2
  ;;
esac
