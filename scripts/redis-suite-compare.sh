#!/usr/bin/env bash
# Runs Redis's own test suite (../shared/tools/redis-suite.sh) against a fresh
# redis-server, then against strata in front of another fresh redis-server, and fails
# if any test that passed direct did not pass through strata, unless it is listed in
# tests/redis-suite-refusals.txt (tests strata refuses on purpose, each with a reason).
# It also fails when the comparison itself is hollow: a suite that cannot run, a selected
# unit that did not run to its end on either side, a unit that aborted direct, or
# fewer tests passed direct than MIN_DIRECT_PASSED (default: for the CI set 90% of what
# it passes on Redis 7.0.15, see CI_FLOOR; otherwise 1). The suite's
# own exit status is not used: it is non-zero whenever any test fails, also direct.
# Usage: scripts/redis-suite-compare.sh [--full] [UNIT...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib.sh

SUITE=${REDIS_SUITE:-$ROOT/../shared/tools/redis-suite.sh}
[ -f "$SUITE" ] || { log "no Redis test suite runner at $SUITE"; exit 1; }
[ -x "$SUITE" ] || SUITE="bash $SUITE"
# The CI set: data types (lists and stream consumer groups included: ready spare
# connections keep several clients' blocking commands in the order they were sent),
# expire, multi, pub/sub, scripting, protocol, introspection (CLIENT LIST/INFO/KILL) and
# tracking (pass-through clients naming strata ids) units.
CI_UNITS=(unit/type/string unit/type/incr unit/type/list unit/type/list-2 unit/type/list-3
  unit/type/hash unit/type/set unit/type/zset unit/type/stream unit/type/stream-cgroups
  unit/expire unit/multi unit/pubsub unit/pubsubshard unit/scripting unit/protocol
  unit/keyspace unit/bitops unit/hyperloglog unit/geo unit/functions unit/introspection unit/tracking)
UNITS=()
for arg in "$@"; do
  case "$arg" in
    --full) UNITS=(__all__) ;;
    *) UNITS+=("$arg") ;;
  esac
done
CI_FLOOR=1292  # 90% of the distinct tests the CI set passes direct (1,436 on Redis 7.0.15, proxy profile)
FLOOR=${MIN_DIRECT_PASSED:-}
if [ ${#UNITS[@]} -eq 0 ]; then
  UNITS=("${CI_UNITS[@]}")
  FLOOR=${FLOOR:-$CI_FLOOR}
fi
[ "${UNITS[0]}" = "__all__" ] && UNITS=()

WORK=$(mktemp -d /tmp/strata-suite.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

start_redis() {  # start_redis PORT DIR
  mkdir -p "$2"
  redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no --dir "$2" \
    --enable-debug-command yes --enable-protected-configs yes --enable-module-command yes >"$2/log" 2>&1 &
  PIDS+=($!)
  wait_port "$1"
}

cargo build --quiet --bin strata
DIRECT_PORT=$(free_port); start_redis "$DIRECT_PORT" "$WORK/direct"
BEHIND_PORT=$(free_port); start_redis "$BEHIND_PORT" "$WORK/behind"
STRATA_PORT=$(free_port)
RUST_LOG=warn target/debug/strata --listen "127.0.0.1:$STRATA_PORT" --upstream "redis://127.0.0.1:$BEHIND_PORT" \
  >"$WORK/strata.log" 2>&1 &
PIDS+=($!)
wait_port "$STRATA_PORT"

KNOWN="$ROOT/../shared/tools/redis-suite-known-failures.txt:$ROOT/tests/redis-suite-refusals.txt"
run_suite() {  # run_suite NAME HOST PORT BACKEND
  mkdir -p "$WORK/$1"
  log "suite $1 (${#UNITS[@]} units; 0 = all)"
  BACKEND=$4 LOG_DIR="$WORK/$1" KNOWN_FAILURES="$KNOWN" UNIT_TIMEOUT=${UNIT_TIMEOUT:-180} \
    $SUITE "$2" "$3" "${UNITS[@]}" >"$WORK/$1.out" 2>&1 || true
  tail -n 1 "$WORK/$1.out" | sed "s/^/  $1: /" >&2
}
run_suite direct 127.0.0.1 "$DIRECT_PORT" "127.0.0.1:$DIRECT_PORT"
run_suite strata 127.0.0.1 "$STRATA_PORT" "127.0.0.1:$BEHIND_PORT"

# Every unit the run selected; for --full, the suite's own list (the direct run fetched it).
if [ ${#UNITS[@]} -eq 0 ]; then
  TESTS_DIR=${REDIS_TESTS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/strata/redis-tests}
  mapfile -t SELECTED < <(cd "$TESTS_DIR" 2>/dev/null && ./runtest --list-tests)
  [ ${#SELECTED[@]} -gt 0 ] || { log "cannot list the suite's units in $TESTS_DIR"; exit 1; }
else
  SELECTED=("${UNITS[@]}")
fi

python3 - "$WORK" "${FLOOR:-0}" "${SELECTED[@]}" <<'PY'
import glob, os, re, sys
work, floor, selected = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
ran = {"direct": set(), "strata": set()}  # units that ran to their end, per side
def results(name):
    passed, failed = set(), set()
    for log in glob.glob(os.path.join(work, name, "*.log")):
        unit = os.path.basename(log)[:-4]
        for line in open(log, errors="replace"):
            line = re.sub(r"\x1b\[[0-9;]*m", "", line)
            if re.match(r"\[\d+/\d+ done\]: ", line):
                ran[name].add(unit)
            m = re.match(r"\[(ok|err)\]: (.*?)( \(\d+ ms\))?$", line.rstrip())
            if m:
                (passed if m.group(1) == "ok" else failed).add((unit, m.group(2)))
    return passed, failed
direct_ok, direct_err = results("direct")
strata_ok, strata_err = results("strata")

# Is the comparison real? Every selected unit must have run to its end on both sides
# (runtest's "[1/1 done]: unit" line; not "passed something": the proxy profile's tags
# leave out every test of unit/type/list-2 and unit/pubsubshard, and unit/printver has
# none), a unit that aborted direct compares nothing, and the direct side must pass at
# least the floor.
hollow = []
for unit in selected:
    name = unit.replace("/", "_")
    for side in ("direct", "strata"):
        if name not in ran[side]:
            hollow.append(f"{unit}: did not run to its end {side} (no log, or no 'done' in it)")
direct_out = os.path.join(work, "direct.out")
for line in open(direct_out, errors="replace") if os.path.exists(direct_out) else []:
    if "ABORTED" in line:
        hollow.append("aborted direct: " + line.strip())
minimum = max(floor, 1)
if len(direct_ok) < minimum:
    hollow.append(f"only {len(direct_ok)} tests passed direct; at least {minimum} expected")
missing = sorted(direct_ok - strata_ok)
print(f"redis suite: direct {len(direct_ok)} ok / {len(direct_err)} err; "
      f"through strata {len(strata_ok)} ok / {len(strata_err)} err")
for unit, test in missing:
    print(f"  passes direct, not through strata: [{unit}] {test}")
for unit, test in sorted(strata_err - direct_err):
    print(f"  fails only through strata: [{unit}] {test}")
aborted = [l for l in open(os.path.join(work, "strata.out")) if "ABORTED" in l]
for line in aborted:
    print("  aborted through strata: " + line.strip())
for problem in hollow:
    print("  not compared: " + problem)
bad = len(missing) + len(aborted)
print(f"{len(strata_ok & direct_ok)} passed, {bad} failed, {len(hollow)} comparison problem(s)")
sys.exit(1 if bad or hollow else 0)
PY
