#!/usr/bin/env bash
# Demo: strata on 127.0.0.1:6380 in front of a local Redis (6379) and a PostgreSQL with
# the demo schema (scripts/demo/schema.sql: products 1-1000, discount rules, carts),
# using strata.example.toml. Installs redis-server and PostgreSQL when missing, reuses
# a Redis already on 6379, and starts a throwaway PostgreSQL cluster unless
# STRATA_POSTGRES names one (the schema is then loaded into that database).
#
# Then, on a cold cache:   redis-cli -p 6380 GET product:details:42
#                          redis-cli -p 6380 INFO strata
# Stop with Ctrl-C (strata exits at once on SIGINT; SIGTERM drains gracefully).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib.sh

need redis-server redis-server
need redis-cli redis-tools
need psql postgresql-client
PG_BIN=/usr/lib/postgresql/15/bin
[ -x "$PG_BIN/initdb" ] || need_package postgresql-15

PIDS=()
PG_DATA=
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$PG_DATA" ] && as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA/data" -m fast stop >/dev/null 2>&1
  true
}
trap cleanup EXIT

if redis-cli -p 6379 ping >/dev/null 2>&1; then
  log "reusing the Redis already on 127.0.0.1:6379"
else
  DATA=$(mktemp -d /tmp/strata-demo-redis.XXXX)
  redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --dir "$DATA" >"$DATA/log" 2>&1 &
  PIDS+=($!)
  wait_port 6379
  log "started redis-server on 127.0.0.1:6379 (stopped when this script ends)"
fi

if [ -z "${STRATA_POSTGRES:-}" ]; then
  PG_PORT=5432
  (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && PG_PORT=$(free_port)
  PG_DATA=$(mktemp -d /tmp/strata-demo-pg.XXXX)
  chmod 755 "$PG_DATA"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DATA"
  as_postgres "$PG_BIN/initdb" -A trust -U postgres --no-sync -D "$PG_DATA/data" >/dev/null
  as_postgres "$PG_BIN/pg_ctl" -w -D "$PG_DATA/data" -l "$PG_DATA/log" \
    -o "-p $PG_PORT -k $PG_DATA -c listen_addresses=127.0.0.1" start >/dev/null
  export STRATA_POSTGRES="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  log "started a throwaway PostgreSQL on 127.0.0.1:$PG_PORT (stopped when this script ends)"
fi
psql "$STRATA_POSTGRES" -q -v ON_ERROR_STOP=1 -f scripts/demo/schema.sql 2>&1 | grep -v NOTICE || true
log "loaded the demo schema: $(psql "$STRATA_POSTGRES" -Atc 'SELECT count(*) FROM products') products"

cargo build --release --bin strata
target/release/strata check-config strata.example.toml --db
log "strata on 127.0.0.1:6380 -> redis://127.0.0.1:6379 + $STRATA_POSTGRES"
log "try: redis-cli -p 6380 GET product:details:42 ; redis-cli -p 6380 INFO strata"
target/release/strata --config strata.example.toml --admin 127.0.0.1:9121 "$@"
