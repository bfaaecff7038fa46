#!/usr/bin/env bash
# bench/soak.sh: ten minutes of mixed traffic through one tokengate, checking that it
# stays correct and flat (issue "Hardening, round 2", item 8; not part of cargo test).
#
# WHAT IT DOES
#   Starts, as separate processes, the soak backend (examples/soak.rs: issues HS256
#   tokens on POST /login, 200 to the rest) and a release tokengate in front of it
#   (HS256, SQLite allowlist, verdict cache on, capture on /login), then runs the soak
#   driver (examples/soak.rs `drive`): it measures the proxy's maximum rate for 10 s and
#   drives SOAK_RATE_SHARE (80%) of it, open loop, mixing logins, authenticated GETs,
#   logouts, requests with revoked tokens and, every 5 s, a CLI revocation
#   (`tokengate tokens revoke --user`, a separate process on the same store).
#   Every SOAK_REPORT seconds it prints requests, rate, p50/p99, unexpected answers,
#   violations (a revoked token served after its revocation was acknowledged), and the
#   proxy's RSS and open fds. It exits non-zero on any error or violation, or when RSS
#   grew more than 20% after warm-up.
#   Pinning: tokengate on core 0; the backend and the driver on core 1.
#
# HOW TO RUN
#   bench/soak.sh                      # 10 minutes (plus ~30 s of build check and warm-up)
#   SOAK_SECONDS=60 bench/soak.sh      # a shorter run
#   SOAK_RATE=5000 bench/soak.sh       # a fixed rate instead of 80% of the measured max
#   SOAK_NO_BUILD=1 bench/soak.sh      # use the binaries in target/release
#
# KNOBS: SOAK_SECONDS (600) SOAK_RATE_SHARE (0.8) SOAK_RATE (measured) SOAK_REPORT (30)
#        SOAK_PORT_BASE (18200: uses BASE+1 .. BASE+3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SECONDS_TOTAL=${SOAK_SECONDS:-600}
RATE_SHARE=${SOAK_RATE_SHARE:-0.8}
RATE=${SOAK_RATE:-0}
REPORT=${SOAK_REPORT:-30}
PORT_BASE=${SOAK_PORT_BASE:-18200}
BACKEND_PORT=$((PORT_BASE + 1))
PROXY_PORT=$((PORT_BASE + 2))
ADMIN_PORT=$((PORT_BASE + 3))
SECRET="soak-hmac-secret-0123456789abcdef-0123456789abcdef"
TG=$ROOT/target/release/tokengate
SOAK_BIN=$ROOT/target/release/examples/soak
export RUST_LOG=warn

log() { echo "soak: $*" >&2; }
die() { echo "soak: error: $*" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || die "needs at least 2 cores (proxy on core 0, load on core 1)"
for tool in curl taskset; do command -v $tool >/dev/null || die "$tool is required"; done

if [ "${SOAK_NO_BUILD:-0}" != 1 ]; then
  log "building (cargo build --release)"
  nice cargo build --release --locked --quiet --bin tokengate --example soak
fi
for b in "$TG" "$SOAK_BIN"; do [ -x "$b" ] || die "$b is missing (build first)"; done

WORK=$(mktemp -d -t tokengate-soak.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # url -> 0 once it answers 2xx (10 s)
  for _ in $(seq 100); do curl -fs -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

cat >"$WORK/tokengate.toml" <<TOML
[server]
listen = "127.0.0.1:$PROXY_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"

[upstream]
url = "http://127.0.0.1:$BACKEND_PORT"

[jwt]
algorithms = ["HS256"]
secret = "$SECRET"

[[capture]]
path = "/login"
from = "json:/access_token"

[store]
sqlite_path = "$WORK/soak.db"
strategy = "allowlist"
TOML
"$TG" check-config --config "$WORK/tokengate.toml" >/dev/null || die "the generated config was refused"

taskset -c 1 "$SOAK_BIN" backend "127.0.0.1:$BACKEND_PORT" "$SECRET" 2>"$WORK/backend.log" &
PIDS+=("$!")
taskset -c 0 "$TG" serve --config "$WORK/tokengate.toml" 2>"$WORK/tokengate.log" &
TG_PID=$!
PIDS+=("$TG_PID")
wait_http "http://127.0.0.1:$ADMIN_PORT/readyz" || die "tokengate did not start: $(tail -3 "$WORK/tokengate.log")"

log "$(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
log "tokengate $("$TG" --version 2>/dev/null || echo '?') pid $TG_PID on core 0; driving for $SECONDS_TOTAL s"
rate_args=(--rate-share "$RATE_SHARE")
[ "$RATE" = 0 ] || rate_args=(--rate "$RATE")
status=0
taskset -c 1 "$SOAK_BIN" drive --proxy "127.0.0.1:$PROXY_PORT" --pid "$TG_PID" \
  --tokengate "$TG" --config "$WORK/tokengate.toml" --seconds "$SECONDS_TOTAL" \
  --report-seconds "$REPORT" "${rate_args[@]}" || status=$?
kill -0 "$TG_PID" 2>/dev/null || { log "tokengate exited during the soak"; status=1; }
errors=$(grep -c '"level":"ERROR"' "$WORK/tokengate.log" || true)
log "tokengate logged $errors error line(s)"
[ "$errors" = 0 ] || { tail -5 "$WORK/tokengate.log" >&2; status=1; }
exit $status
