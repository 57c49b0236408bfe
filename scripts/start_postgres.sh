#!/usr/bin/env bash
# A throwaway PostgreSQL server (Debian's package) on loopback for the test of several sweep workers on one
# PostgreSQL study. Prints its URL:
#   export LIPSWEEP_TEST_POSTGRES=$(bash scripts/start_postgres.sh)   # start: temp data dir, trust auth, db lipsweep_test
#   bash scripts/start_postgres.sh stop                               # stop it and delete its data
set -euo pipefail
DIR=${LIPSWEEP_PG_DIR:-/tmp/lipsweep-postgres}
PORT=${LIPSWEEP_PG_PORT:-54329}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$BIN" ]; then
  echo "start_postgres: PostgreSQL is not installed (apt-get install postgresql; scripts/setup.sh does it)" >&2
  exit 1
fi
as_postgres() {  # the server refuses to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
stop() {
  if [ -f "$DIR/data/postmaster.pid" ]; then as_postgres "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true; fi
  rm -rf "$DIR"
}
if [ "${1:-start}" = stop ]; then stop; exit 0; fi

stop
mkdir -p "$DIR"
if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; fi
as_postgres "$BIN/initdb" -D "$DIR/data" -U postgres -A trust >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 1; }
as_postgres "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off" start >/dev/null || { cat "$DIR/server.log" >&2; exit 1; }
as_postgres "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres lipsweep_test
echo "postgresql://postgres@127.0.0.1:$PORT/lipsweep_test"
