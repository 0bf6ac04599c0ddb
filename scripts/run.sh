#!/usr/bin/env bash
# Demo: runs strata on 127.0.0.1:6380 in front of a local Redis on 6379 with the example
# config. Installs and starts redis-server if missing; reuses one already on 6379.
# Stop with Ctrl-C (strata exits at once on SIGINT; SIGTERM drains gracefully).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib.sh

need redis-server redis-server
need redis-cli redis-tools

REDIS_PID=
if redis-cli -p 6379 ping >/dev/null 2>&1; then
  log "reusing the Redis already on 127.0.0.1:6379"
else
  DATA=$(mktemp -d /tmp/strata-demo-redis.XXXX)
  redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --dir "$DATA" >"$DATA/log" 2>&1 &
  REDIS_PID=$!
  wait_port 6379
  log "started redis-server on 127.0.0.1:6379 (pid $REDIS_PID, stopped when this script ends)"
fi
cleanup() { [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null; true; }
trap cleanup EXIT

cargo build --release --bin strata
log "strata on 127.0.0.1:6380 -> redis://127.0.0.1:6379; try: redis-cli -p 6380 ping"
target/release/strata --config strata.example.toml "$@"
