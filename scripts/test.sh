#!/usr/bin/env bash
# Runs every test strata has, installing what they need:
#   1. cargo fmt --check, clippy, strata check-config on the example config, then unit
#      and integration tests (cargo test) against real redis-server processes and
#      throwaway PostgreSQL clusters that the tests start themselves;
#   2. Redis's own test suite (7.0.15, external mode) against a redis-server directly and
#      through strata in the same job: every test that passes direct must pass through
#      strata, except deliberate refusals listed in tests/redis-suite-refusals.txt.
# Usage: scripts/test.sh [--full]   (--full runs every suite unit, not just the CI set)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib.sh

FULL=0
[ "${1:-}" = "--full" ] && FULL=1

need redis-server redis-server
need redis-cli redis-tools
need tclsh8.6 tcl
need python3 python3
need psql postgresql-client
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_package postgresql-15

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings

log "strata check-config strata.example.toml (the demo config)"
cargo run --quiet --bin strata -- check-config strata.example.toml

log "cargo test (unit + integration)"
cargo test --all-targets 2>&1 | tee /tmp/strata-cargo-test.$$.log
grep -q '^test result: ok' /tmp/strata-cargo-test.$$.log
rm -f /tmp/strata-cargo-test.$$.log

log "Redis test suite: direct vs through strata"
scripts/redis-suite-compare.sh $([ "$FULL" = 1 ] && echo --full)
