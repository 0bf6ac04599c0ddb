#!/usr/bin/env bash
# The cost of knowing tiers, measured in one run on one machine:
#   1. tier lookup + TTL policy + accounting: the same strata, redis-benchmark on tiered
#      keys (t:…, a tier with a default TTL, so SET is rewritten to SET … PX) versus
#      untiered keys (u:…). Target: tiered ≥ 0.95× untiered (≤ 5% cost).
#      SET has two baselines. `tier-SET` compares with a plain untiered SET, so it also
#      contains Redis' own cost of storing a TTL (SET … PX runs at ~0.7× of SET straight
#      at Redis on this machine). `tier-SETPX` compares with an untiered SET that already
#      carries PX: the same work in Redis, so the ratio is strata's cost alone.
#   2. the hit path with read-through rules configured: GETs of cached keys that a
#      [[read_through]] rule covers (product:details:…) versus cached keys of the same
#      tier that no rule covers (product:other:…), through the same strata, so only the
#      rule matching differs. Target: unchanged (≥ 0.95×). `hit2-GET` repeats the
#      comparison across two processes (a strata without rules vs one with), which adds
#      the noise of where each process runs.
# Interleaved rounds, medians, ratios per round. No PostgreSQL is needed: hits never
# reach it (the rule points at a closed port; strata starts while the database is down).
#
# Usage: bench/tiers.sh           ROUNDS=5 REQUESTS=200000 CLIENTS=50 (env knobs)
#        QUICK=1 bench/tiers.sh   one short round
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib.sh

QUICK=${QUICK:-0}
ROUNDS=${ROUNDS:-$([ "$QUICK" = 1 ] && echo 1 || echo 5)}
REQUESTS=${REQUESTS:-$([ "$QUICK" = 1 ] && echo 20000 || echo 200000)}
CLIENTS=${CLIENTS:-50}
KEYSPACE=1000

need redis-server redis-server
need redis-benchmark redis-tools
need python3 python3

if [ -z "${STRATA_BIN:-}" ]; then
  log "building strata (release)"
  cargo build --quiet --release --bin strata
  STRATA_BIN=target/release/strata
fi

WORK=$(mktemp -d /tmp/strata-tiers-bench.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

REDIS_PORT=$(free_port); PLAIN_PORT=$(free_port); RULES_PORT=$(free_port); DEAD_PG=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT"

TIERS='
[[tiers]]
name = "bench"
prefixes = ["t:", "product:"]
default_ttl = "1h"
jitter = "10%"
'
printf '%s' "$TIERS" >"$WORK/plain.toml"
cat >"$WORK/rules.toml" <<EOF
$TIERS
[postgres]
url = "postgres://postgres@127.0.0.1:$DEAD_PG/postgres"
[[read_through]]
key = "product:details:{id}"
query = "SELECT name FROM products WHERE id = \$1"
EOF
"$STRATA_BIN" check-config "$WORK/rules.toml" >/dev/null
for pair in "plain:$PLAIN_PORT" "rules:$RULES_PORT"; do
  name=${pair%%:*}; port=${pair##*:}
  RUST_LOG=warn "$STRATA_BIN" --config "$WORK/$name.toml" --listen "127.0.0.1:$port" \
    --upstream "redis://127.0.0.1:$REDIS_PORT" >"$WORK/strata-$name.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port"
done

# bench PORT PIPELINE COMMAND… → requests per second
bench() {
  local port=$1 pipeline=$2; shift 2
  redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$REQUESTS" -P "$pipeline" -r "$KEYSPACE" --csv "$@" \
    | tail -n 1 | python3 -c 'import csv,sys; print(next(csv.reader(sys.stdin))[1])'
}

# Keys for the GET cases exist, so every GET is a hit.
redis-benchmark -h 127.0.0.1 -p "$PLAIN_PORT" -c 10 -n 20000 -r "$KEYSPACE" -q SET u:__rand_int__ xx >/dev/null
redis-benchmark -h 127.0.0.1 -p "$PLAIN_PORT" -c 10 -n 20000 -r "$KEYSPACE" -q SET t:__rand_int__ xx >/dev/null
redis-benchmark -h 127.0.0.1 -p "$PLAIN_PORT" -c 10 -n 20000 -r "$KEYSPACE" -q SET product:details:__rand_int__ xx >/dev/null
redis-benchmark -h 127.0.0.1 -p "$PLAIN_PORT" -c 10 -n 20000 -r "$KEYSPACE" -q SET product:other:__rand_int__ xx >/dev/null

RESULTS="$WORK/results.tsv"
for round in $(seq "$ROUNDS"); do
  log "round $round/$ROUNDS"
  for p in 1 16; do
    for op in SET GET; do
      args=("$op" "u:__rand_int__"); [ "$op" = SET ] && args+=(xx)
      printf 'tier-%s-P%s\tuntiered\t%s\n' "$op" "$p" "$(bench "$PLAIN_PORT" "$p" "${args[@]}")" >>"$RESULTS"
      args=("$op" "t:__rand_int__"); [ "$op" = SET ] && args+=(xx)
      printf 'tier-%s-P%s\ttiered\t%s\n' "$op" "$p" "$(bench "$PLAIN_PORT" "$p" "${args[@]}")" >>"$RESULTS"
    done
    printf 'tier-SETPX-P%s\tuntiered\t%s\n' "$p" "$(bench "$PLAIN_PORT" "$p" SET "u:__rand_int__" xx PX 3600000)" >>"$RESULTS"
    printf 'tier-SETPX-P%s\ttiered\t%s\n' "$p" "$(bench "$PLAIN_PORT" "$p" SET "t:__rand_int__" xx)" >>"$RESULTS"
    printf 'hit-GET-P%s\tno-rule\t%s\n' "$p" "$(bench "$RULES_PORT" "$p" GET "product:other:__rand_int__")" >>"$RESULTS"
    printf 'hit-GET-P%s\trule\t%s\n' "$p" "$(bench "$RULES_PORT" "$p" GET "product:details:__rand_int__")" >>"$RESULTS"
    printf 'hit2-GET-P%s\tno-rules\t%s\n' "$p" "$(bench "$PLAIN_PORT" "$p" GET "product:details:__rand_int__")" >>"$RESULTS"
    printf 'hit2-GET-P%s\trules\t%s\n' "$p" "$(bench "$RULES_PORT" "$p" GET "product:details:__rand_int__")" >>"$RESULTS"
  done
done

python3 - "$RESULTS" "$ROUNDS" <<'PY'
import sys, statistics
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
rounds = int(sys.argv[2])
runs = defaultdict(list)
for case, variant, rps in rows:
    runs[(case, variant)].append(float(rps))
pairs = {"tier": ("untiered", "tiered"), "hit": ("no-rule", "rule"), "hit2": ("no-rules", "rules")}
print(f"{'case':<16}{'baseline rps':>14}{'measured rps':>14}{'ratio (median of rounds)':>26}")
worst = []
for case in sorted({c for c, _ in runs}):
    base, test = pairs[case.split("-")[0]]
    b, t = runs[(case, base)], runs[(case, test)]
    ratios = [t[i] / b[i] for i in range(min(len(b), len(t)))]
    ratio = statistics.median(ratios)
    worst.append(ratio)
    label = f"{base} -> {test}"
    print(f"{case:<16}{statistics.median(b):>14.0f}{statistics.median(t):>14.0f}{ratio:>12.3f}   {label}")
print(f"\nrounds: {rounds}; target: every ratio >= 0.95 (<= 5% cost); lowest: {min(worst):.3f}")
PY
