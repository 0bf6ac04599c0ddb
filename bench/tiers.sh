#!/usr/bin/env bash
# The cost of knowing tiers, measured in one run on one machine:
#   1. tier lookup + TTL policy + accounting: the same strata, redis-benchmark on tiered
#      keys (t:…, a tier with a default TTL, so SET is rewritten to SET … PX) versus
#      untiered keys (u:…, x:…). Target: tiered ≥ 0.95× untiered (≤ 5% cost).
#      SET has two baselines. `tier-SET` compares with a plain untiered SET, so it also
#      contains Redis' own cost of storing a TTL (SET … PX runs at ~0.7× of SET straight
#      at Redis on this machine). `tier-SETPX` compares with an untiered SET that already
#      carries PX: the same work in Redis, so the ratio is strata's cost alone.
#      GET likewise: `tier-GET` compares with untiered keys that carry a TTL too (x:…,
#      set with PX), since Redis spends more on a read of a key with a TTL (its expiry
#      lookup), which is the policy's cost in Redis, not strata's. `tier-GETu` compares
#      with untiered keys without a TTL (u:…): the whole cost, shown for information.
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
#        PLACEMENT=split bench/tiers.sh   redis-benchmark on a CPU of its own (bench/placement.sh)
#        CASES='tier-GET-P16' ROUNDS=21 bench/tiers.sh   only the cases matching a regex, with
#                                 more rounds: the spread between rounds (±5%) is as large
#                                 as the target, so one case is best settled by many rounds
#        RAW_OUT=FILE bench/tiers.sh   also keep every run (case, variant, rps, strata µs/req,
#                                 Redis µs/req)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib.sh
. bench/placement.sh

QUICK=${QUICK:-0}
ROUNDS=${ROUNDS:-$([ "$QUICK" = 1 ] && echo 1 || echo 5)}
REQUESTS=${REQUESTS:-$([ "$QUICK" = 1 ] && echo 20000 || echo 200000)}
# Pipelined runs are ~10x faster; the same count would finish in a fraction of a second,
# too short to be steady.
PIPELINED_REQUESTS=${PIPELINED_REQUESTS:-$((REQUESTS * 10))}
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
"${SUT[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
REDIS_PID=$!
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
declare -A STRATA_PID
for pair in "plain:$PLAIN_PORT" "rules:$RULES_PORT"; do
  name=${pair%%:*}; port=${pair##*:}
  RUST_LOG=warn "${SUT[@]}" "$STRATA_BIN" --config "$WORK/$name.toml" --listen "127.0.0.1:$port" \
    --upstream "redis://127.0.0.1:$REDIS_PORT" >"$WORK/strata-$name.log" 2>&1 &
  PIDS+=($!)
  STRATA_PID[$port]=$!
  wait_port "$port"
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)

# measure CASE VARIANT PORT PIPELINE COMMAND… → one result line: rps, and the CPU the
# strata behind PORT spent per request (µs), which is steadier than rps on a busy machine;
# then Redis's CPU per request (kept in RAW_OUT, not printed).
measure() {
  local case=$1 variant=$2 port=$3 pipeline=$4; shift 4
  local requests=$REQUESTS
  [ "$pipeline" -gt 1 ] && requests=$PIPELINED_REQUESTS
  local pid=${STRATA_PID[$port]} before after redis_before redis_after rps
  before=$(cpu_ticks "$pid")
  redis_before=$(cpu_ticks "$REDIS_PID")
  rps=$("${LOADGEN[@]}" redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -n "$requests" -P "$pipeline" -r "$KEYSPACE" --csv "$@" \
    | tail -n 1 | python3 -c 'import csv,sys; print(next(csv.reader(sys.stdin))[1])')
  after=$(cpu_ticks "$pid")
  redis_after=$(cpu_ticks "$REDIS_PID")
  printf '%s\t%s\t%s\t%s\t%s\n' "$case" "$variant" "$rps" \
    "$(python3 -c "print(($after - $before) / $TICKS / $requests * 1e6)")" \
    "$(python3 -c "print(($redis_after - $redis_before) / $TICKS / $requests * 1e6)")" >>"$RESULTS"
}

# pair ROUND CASE PIPELINE "BASE PORT ARGS…" "TEST PORT ARGS…": both runs, in an order
# that alternates with the round, so drift during a round does not favour either side.
pair() {
  local round=$1 case=$2 pipeline=$3
  [[ -n "${CASES:-}" && ! "$case" =~ $CASES ]] && return 0
  local -a base=($4) test=($5)
  if [ $((round % 2)) = 1 ]; then
    measure "$case" "${base[0]}" "${base[1]}" "$pipeline" "${base[@]:2}"
    measure "$case" "${test[0]}" "${test[1]}" "$pipeline" "${test[@]:2}"
  else
    measure "$case" "${test[0]}" "${test[1]}" "$pipeline" "${test[@]:2}"
    measure "$case" "${base[0]}" "${base[1]}" "$pipeline" "${base[@]:2}"
  fi
}

# Keys for the GET cases exist, so every GET is a hit.
for key in u t product:details product:other; do
  redis-benchmark -h 127.0.0.1 -p "$PLAIN_PORT" -c 10 -n 20000 -r "$KEYSPACE" -q SET "$key:__rand_int__" xx >/dev/null
done
# The tier-GET baseline: untiered, with a TTL like the tiered keys (x:, the length of t:
# and no tier prefix starting with x; never rewritten by the SET cases, which write u:…).
# A day, so that no run outlives it.
redis-benchmark -h 127.0.0.1 -p "$PLAIN_PORT" -c 10 -n 20000 -r "$KEYSPACE" -q \
  SET "x:__rand_int__" xx PX 86400000 >/dev/null

RESULTS="$WORK/results.tsv"
for round in $(seq "$ROUNDS"); do
  log "round $round/$ROUNDS"
  for p in 1 16; do
    pair "$round" "tier-SET-P$p" "$p" "untiered $PLAIN_PORT SET u:__rand_int__ xx" "tiered $PLAIN_PORT SET t:__rand_int__ xx"
    pair "$round" "tier-GET-P$p" "$p" "untiered $PLAIN_PORT GET x:__rand_int__" "tiered $PLAIN_PORT GET t:__rand_int__"
    # u: keys have no TTL here: tier-SET's untiered side (or the setup) wrote them without
    # one, and tier-SETPX, which gives them one, comes later in the round.
    pair "$round" "tier-GETu-P$p" "$p" "untiered $PLAIN_PORT GET u:__rand_int__" "tiered $PLAIN_PORT GET t:__rand_int__"
    pair "$round" "tier-SETPX-P$p" "$p" "untiered $PLAIN_PORT SET u:__rand_int__ xx PX 3600000" \
      "tiered $PLAIN_PORT SET t:__rand_int__ xx"
    pair "$round" "hit-GET-P$p" "$p" "no-rule $RULES_PORT GET product:other:__rand_int__" \
      "rule $RULES_PORT GET product:details:__rand_int__"
    pair "$round" "hit2-GET-P$p" "$p" "no-rules $PLAIN_PORT GET product:details:__rand_int__" \
      "rules $RULES_PORT GET product:details:__rand_int__"
  done
done

if [ -n "${RAW_OUT:-}" ]; then cp "$RESULTS" "$RAW_OUT" || log "could not write RAW_OUT=$RAW_OUT"; fi
python3 - "$RESULTS" "$ROUNDS" "$PLACEMENT" <<'PY'
import sys, statistics
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
rounds = int(sys.argv[2])
runs = defaultdict(list)
cpu = defaultdict(list)
for case, variant, rps, us, _redis_us in rows:
    runs[(case, variant)].append(float(rps))
    cpu[(case, variant)].append(float(us))
pairs = {"tier": ("untiered", "tiered"), "hit": ("no-rule", "rule"), "hit2": ("no-rules", "rules")}
print(f"{'case':<16}{'baseline rps':>14}{'measured rps':>14}{'ratio':>8}"
      f"{'strata µs/req':>16}{'diff':>8}   (ratio: median of per-round rps ratios)")
worst = []
for case in sorted({c for c, _ in runs}):
    base, test = pairs[case.split("-")[0]]
    b, t = runs[(case, base)], runs[(case, test)]
    ratios = [t[i] / b[i] for i in range(min(len(b), len(t)))]
    ratio = statistics.median(ratios)
    # tier-SET also measures Redis storing the TTL the policy adds (SET -> SET PX), which
    # is not strata's cost; tier-SETPX is the same comparison with that work on both sides.
    informational = case.startswith(("tier-SET-", "tier-GETu-"))
    if not informational:
        worst.append((case, ratio))
    label = f"{base} -> {test}" + ("  (info: includes Redis' own TTL cost)" if informational else "")
    cb, ct = statistics.median(cpu[(case, base)]), statistics.median(cpu[(case, test)])
    print(f"{case:<16}{statistics.median(b):>14.0f}{statistics.median(t):>14.0f}{ratio:>8.3f}"
          f"{cb:>8.3f}{ct:>8.3f}{ct - cb:>+8.3f}   {label}")
print(f"\nrounds: {rounds}; placement: {sys.argv[3]}; target: every ratio >= 0.95 (<= 5% cost), tier-SET aside")
# Two targets: the tier lookup and accounting (tier-*), and the read-through hit path (hit-*).
for label, prefix in (("tier lookup + accounting", "tier-"), ("read-through hit path", "hit")):
    ratios = [r for c, r in worst if c.startswith(prefix)]
    if ratios:
        low = min(ratios)
        print(f"  {label:<26} lowest {low:.3f} ({'met' if low >= 0.95 else 'MISSED'})")
PY
