#!/usr/bin/env bash
# Read-through miss latency against the bare SQL query, in one run on one machine.
#   1. bare SQL: pgbench runs the rule's query for random product ids (per-transaction log
#      → p50/p99), CLIENTS connections;
#   2. miss through strata: redis-benchmark GETs product:details:<random id> on a cold
#      cache (200,000 products, each id asked about once in expectation), CLIENTS
#      connections; each GET is a Redis miss, the query, the write-back and the reply.
# Prints both and the overhead (strata − SQL) at p50 and p99. Target: p99 overhead ≤ 1 ms.
# The hit-path half of the read-through benchmark (rules configured vs not) is in
# bench/tiers.sh.
#
# Usage: bench/readthrough.sh     REQUESTS=10000 CLIENTS=4 (env knobs)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib.sh

REQUESTS=${REQUESTS:-10000}
CLIENTS=${CLIENTS:-4}
PRODUCTS=200000
PG_BIN=/usr/lib/postgresql/15/bin

need redis-server redis-server
need redis-benchmark redis-tools
need psql postgresql-client
need pgbench postgresql-contrib
[ -x "$PG_BIN/initdb" ] || need_package postgresql-15
if [ -z "${STRATA_BIN:-}" ]; then
  log "building strata (release)"
  cargo build --quiet --release --bin strata
  STRATA_BIN=target/release/strata
fi

WORK=$(mktemp -d /tmp/strata-rt-bench.XXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  as_postgres "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

REDIS_PORT=$(free_port); STRATA_PORT=$(free_port); PG_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
mkdir -p "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK/pg"
as_postgres "$PG_BIN/initdb" -A trust -U postgres --no-sync -D "$WORK/pg/data" >/dev/null
as_postgres "$PG_BIN/pg_ctl" -w -D "$WORK/pg/data" -l "$WORK/pg/log" \
  -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
psql "$PG_URL" -q -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL, price_cents integer NOT NULL, category text NOT NULL);
INSERT INTO products SELECT i, 'Product ' || i, (i * 137) % 10000 + 99, 'cat' || (i % 7) FROM generate_series(1, $PRODUCTS) i;
ANALYZE products;
SQL
QUERY='SELECT row_to_json(p)::text FROM products p WHERE p.id = $1'

cat >"$WORK/strata.toml" <<EOF
[[tiers]]
name = "application"
prefixes = ["product:"]
default_ttl = "6h"
[postgres]
url = "$PG_URL"
[[read_through]]
key = "product:details:{id}"
query = "$QUERY"
EOF
RUST_LOG=warn "$STRATA_BIN" --config "$WORK/strata.toml" --listen "127.0.0.1:$STRATA_PORT" \
  --upstream "redis://127.0.0.1:$REDIS_PORT" >"$WORK/strata.log" 2>&1 &
PIDS+=($!)
wait_port "$STRATA_PORT"
# Warm strata's pool and prepared statement, then empty the cache.
redis-cli -p "$STRATA_PORT" GET product:details:1 >/dev/null
redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null

log "bare SQL: pgbench, $CLIENTS clients, $REQUESTS queries"
printf '\\set id random(1, %s)\nSELECT row_to_json(p)::text FROM products p WHERE p.id = :id;\n' "$PRODUCTS" >"$WORK/q.sql"
(cd "$WORK" && pgbench -n -M prepared -c "$CLIENTS" -t $((REQUESTS / CLIENTS)) -l -f q.sql "$PG_URL" >/dev/null 2>&1)
cat "$WORK"/pgbench_log.* | awk '{print $3}' >"$WORK/sql.us"

log "misses through strata: redis-benchmark, $CLIENTS clients, $REQUESTS GETs on a cold cache"
redis-benchmark -h 127.0.0.1 -p "$STRATA_PORT" -c "$CLIENTS" -n "$REQUESTS" -r "$PRODUCTS" --csv \
  GET "product:details:__rand_int__" >"$WORK/strata.csv"
INFO=$(redis-cli -p "$STRATA_PORT" INFO strata | tr -d '\r' | grep -E '^strata_readthrough_(queries|rows|no_rows):')

python3 - "$WORK/sql.us" "$WORK/strata.csv" <<'PY'
import csv, statistics, sys
sql = sorted(int(x) for x in open(sys.argv[1]) if x.strip())
pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))]
rows = list(csv.reader(open(sys.argv[2])))
head, vals = rows[0], rows[-1]
strata = {h: float(v) for h, v in zip(head[1:], vals[1:])}
s50, s99 = strata["p50_latency_ms"] * 1000, strata["p99_latency_ms"] * 1000
q50, q99 = pct(sql, 0.50), pct(sql, 0.99)
print(f"{'':<28}{'p50 µs':>10}{'p99 µs':>10}")
print(f"{'bare SQL (pgbench)':<28}{q50:>10.0f}{q99:>10.0f}")
print(f"{'GET miss through strata':<28}{s50:>10.0f}{s99:>10.0f}")
print(f"{'overhead':<28}{s50 - q50:>10.0f}{s99 - q99:>10.0f}")
print(f"\ntarget: p99 overhead <= 1000 µs -> {'met' if s99 - q99 <= 1000 else 'NOT met'}")
PY
printf '%s\n' "$INFO"
