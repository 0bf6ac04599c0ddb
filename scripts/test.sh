#!/usr/bin/env bash
# Runs every test strata has, installing what they need:
#   1. cargo fmt --check, clippy, strata check-config on the example config, then unit
#      and integration tests (cargo test) against real redis-server processes and
#      throwaway PostgreSQL clusters that the tests start themselves;
#      The differential test (tests/differential) runs seeded random command sequences
#      through strata and straight at a second Redis for STRATA_DIFF_SECS (60 s here,
#      600 with --full); the parser fuzzing (tests/fuzz_parsers.rs) runs PROPTEST_CASES
#      inputs per property (2000 here, 100000 with --full). A failure prints its seed.
#   2. Redis's own test suite (7.0.15, external mode) against a redis-server directly and
#      through strata in the same job: every test that passes direct must pass through
#      strata, except deliberate refusals listed in tests/redis-suite-refusals.txt.
# Usage: scripts/test.sh [--full]   (--full runs every suite unit, not just the CI set, and
#        the differential test and fuzzing for longer)
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

log "cargo test (unit + integration, differential, fuzzing)"
export STRATA_DIFF_SECS=${STRATA_DIFF_SECS:-$([ "$FULL" = 1 ] && echo 600 || echo 60)}
export PROPTEST_CASES=${PROPTEST_CASES:-$([ "$FULL" = 1 ] && echo 100000 || echo 2000)}
cargo test --all-targets 2>&1 | tee /tmp/strata-cargo-test.$$.log
grep -q '^test result: ok' /tmp/strata-cargo-test.$$.log
rm -f /tmp/strata-cargo-test.$$.log

log "Redis test suite: direct vs through strata"
scripts/redis-suite-compare.sh $([ "$FULL" = 1 ] && echo --full)
