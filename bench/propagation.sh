#!/usr/bin/env bash
# bench/propagation.sh: how fast a revocation made by one process is refused by another
# tokengate on the same store (SPEC §9, "the guarantee").
#
# WHAT IT MEASURES
#   Two scenarios, one run, each of BENCH_COUNT (1000) revocations of a fresh token:
#   (a) postgres: two tokengate replicas, A and B, on one PostgreSQL schema (allowlist).
#       The token is registered on A (POST /admin/tokens), warmed on B (GETs on a
#       protected path until 200, then two more, so that B's verdict cache holds it once
#       there is one), revoked on A (POST /logout with the token; its 204 is the
#       acknowledgement), and then GET back-to-back on B until B answers 401.
#   (b) sqlite: one tokengate on a SQLite file; the token is registered through its
#       admin API (the session id comes from the 201's JSON `session.id`), warmed, and
#       revoked by `tokengate tokens revoke --session ID` run as a separate process on
#       the same file; the clock starts when that process has exited 0; then GETs on the
#       proxy until 401.
#   Each revocation comes after a random pause of 0..BENCH_JITTER_MS (50) ms, so that
#   it falls at a random moment of the feed poll (without it, every iteration would
#   start a fixed time after the previous refusal and measure one phase of the poll).
#   The sample is the time from the acknowledgement to the arrival of the first 401
#   (examples/bench_propagation.rs does the timing, with a keep-alive hyper-util client
#   and requests back to back). Printed per scenario: p50, p99, max and mean time to
#   refusal in ms, timeouts (not refused within 2 s), the 200s answered after the
#   acknowledgement, and the targets of SPEC §9: PostgreSQL p99 < 100 ms, SQLite
#   p99 < 50 ms. A `[cache]` section with the defaults of SPEC §9 (enabled, 100,000
#   entries, max_staleness_ms 100, feed_poll_ms 25) is written into the configs only when
#   `tokengate check-config` accepts it; without a cache every request reads the store,
#   and the times are one request's round trip.
#
# HOW TO RUN
#   bench/propagation.sh                 # 1000 revocations per scenario
#   bench/propagation.sh --count 200     # or BENCH_COUNT=200
#   BENCH_QUICK=1 bench/propagation.sh   # 50 per scenario (smoke run)
#   It builds target/release/tokengate and the examples first. Needs curl and psql;
#   the postgres scenario is skipped with a note when pg_isready fails.
#   Env: BENCH_COUNT, BENCH_JITTER_MS (50), BENCH_PORT_BASE (18200: uses BASE+1 .. BASE+20),
#   BENCH_PG_URL (postgres://postgres@127.0.0.1:5432/test; a schema bench_prop_PID is
#   created and dropped at exit), BENCH_NO_BUILD=1, BENCH_SAMPLES_DIR=DIR (keep every
#   sample: DIR/postgres.txt, DIR/sqlite.txt, lines "index ms stale_200s refused").
#   Output: progress on stderr, a markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

COUNT=${BENCH_COUNT:-}
while [ $# -gt 0 ]; do
  case $1 in
    --count) COUNT=$2; shift 2 ;;
    --count=*) COUNT=${1#--count=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "propagation: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$COUNT" ]; then if [ "${BENCH_QUICK:-0}" = 1 ]; then COUNT=50; else COUNT=1000; fi; fi
PORT_BASE=${BENCH_PORT_BASE:-18200}
PG_BASE_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
JITTER_MS=${BENCH_JITTER_MS:-50}
SAMPLES_DIR=${BENCH_SAMPLES_DIR:-}
[ -z "$SAMPLES_DIR" ] || mkdir -p "$SAMPLES_DIR"
SECRET="bench-hmac-secret-0123456789abcdef-0123456789abcdef"
TOKENGATE_ADMIN_TOKEN="bench-admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TOKENGATE_ADMIN_TOKEN
export RUST_LOG=warn
TG=$ROOT/target/release/tokengate
ECHO_BIN=$ROOT/target/release/examples/bench_echo
PROP_BIN=$ROOT/target/release/examples/bench_propagation

log() { echo "propagation: $*" >&2; }
die() { echo "propagation: error: $*" >&2; exit 1; }
command -v curl >/dev/null || die "curl is required"

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "building (cargo build --release)"
  nice cargo build --release --locked --quiet --bin tokengate --example bench_echo --example bench_propagation
fi
for b in "$TG" "$ECHO_BIN" "$PROP_BIN"; do [ -x "$b" ] || die "$b is missing (build first)"; done

WORK=$(mktemp -d -t tokengate-propagation.XXXXXX)
PIDS=()
PG_SCHEMA=""
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$PG_SCHEMA" ]; then
    psql -q -X "$PG_BASE_URL" -c "DROP SCHEMA IF EXISTS $PG_SCHEMA CASCADE" >/dev/null 2>&1 \
      || echo "propagation: could not drop schema $PG_SCHEMA" >&2
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_http() {
  local url=$1 tries=${2:-100}
  for _ in $(seq "$tries"); do curl -fs -o /dev/null "$url" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
for p in $(seq $((PORT_BASE + 1)) $((PORT_BASE + 20))); do
  port_free "$p" || die "port $p is in use (set BENCH_PORT_BASE)"
done

BACKEND_PORT=$((PORT_BASE + 1))
"$ECHO_BIN" "127.0.0.1:$BACKEND_PORT" 2>"$WORK/echo.log" &
PIDS+=("$!")
wait_http "http://127.0.0.1:$BACKEND_PORT/" || die "the echo backend did not start"

CACHE_BLOCK='[cache]
enabled = true
max_entries = 100000
max_staleness_ms = 100
feed_poll_ms = 25'
config() { # file port store-block extra
  cat >"$1" <<TOML
[server]
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$(($2 + 1))"

[upstream]
url = "http://127.0.0.1:$BACKEND_PORT"

[jwt]
algorithms = ["HS256"]
secret = "$SECRET"

[store]
$3
strategy = "allowlist"

[admin]
token_env = "TOKENGATE_ADMIN_TOKEN"

$4
TOML
}
sqlite_block="backend = \"sqlite\"
sqlite_path = \"$WORK/probe.db\""
config "$WORK/probe.toml" $((PORT_BASE + 18)) "$sqlite_block" ""
"$TG" check-config --config "$WORK/probe.toml" >/dev/null 2>"$WORK/probe.err" \
  || die "tokengate check-config refuses the generated config: $(cat "$WORK/probe.err")"
config "$WORK/probe.toml" $((PORT_BASE + 18)) "$sqlite_block" "$CACHE_BLOCK"
if "$TG" check-config --config "$WORK/probe.toml" >/dev/null 2>&1; then
  CACHE_TEXT="on (max_staleness_ms 100, feed_poll_ms 25)"
else
  CACHE_BLOCK=""; CACHE_TEXT="off (this build does not accept a [cache] section: every request reads the store)"
fi
log "verdict cache: $CACHE_TEXT"

start() { # name config port -> pid in $STARTED
  "$TG" serve --config "$2" 2>"$WORK/$1.log" &
  STARTED=$!
  PIDS+=("$STARTED")
  wait_http "http://127.0.0.1:$(($3 + 1))/readyz" 150 || die "$1 not ready: $(tail -3 "$WORK/$1.log")"
}

RESULTS=()
NOTES=()
# (a) two replicas on PostgreSQL
if command -v pg_isready >/dev/null && pg_isready -q -d "$PG_BASE_URL" 2>/dev/null && command -v psql >/dev/null; then
  PG_SCHEMA=bench_prop_$$
  psql -q -X -v ON_ERROR_STOP=1 "$PG_BASE_URL" -c "CREATE SCHEMA $PG_SCHEMA" >/dev/null || die "cannot create schema $PG_SCHEMA"
  sep='?'; [[ "$PG_BASE_URL" == *\?* ]] && sep='&'
  PG_URL="$PG_BASE_URL${sep}options=-csearch_path%3D$PG_SCHEMA"
  pg_block="backend = \"postgres\"
postgres_url = \"$PG_URL\""
  A=$((PORT_BASE + 10)) B=$((PORT_BASE + 12))
  config "$WORK/a.toml" $A "$pg_block" "$CACHE_BLOCK"
  config "$WORK/b.toml" $B "$pg_block" "$CACHE_BLOCK"
  start replica-a "$WORK/a.toml" $A
  start replica-b "$WORK/b.toml" $B
  log "postgres: $COUNT revocations: logout on replica A, refusal awaited on replica B"
  out=$("$PROP_BIN" --label postgres --count "$COUNT" --secret "$SECRET" --jitter-ms "$JITTER_MS" \
    --register-admin 127.0.0.1:$((A + 1)) --check 127.0.0.1:$B \
    --revoke logout --logout-proxy 127.0.0.1:$A ${SAMPLES_DIR:+--samples "$SAMPLES_DIR/postgres.txt"}) \
    || die "the postgres scenario failed"
  RESULTS+=("$out")
else
  NOTES+=("postgres scenario skipped: pg_isready failed for $PG_BASE_URL (or psql is missing)")
fi

# (b) one proxy on SQLite, revocations by the CLI on the same file
S=$((PORT_BASE + 14))
config "$WORK/s.toml" $S "backend = \"sqlite\"
sqlite_path = \"$WORK/s.db\"" "$CACHE_BLOCK"
start sqlite "$WORK/s.toml" $S
log "sqlite: $COUNT revocations: tokengate tokens revoke --session, refusal awaited on the proxy"
out=$("$PROP_BIN" --label sqlite --count "$COUNT" --secret "$SECRET" --jitter-ms "$JITTER_MS" \
  --register-admin 127.0.0.1:$((S + 1)) --check 127.0.0.1:$S \
  --revoke cli --tokengate "$TG" --config "$WORK/s.toml" ${SAMPLES_DIR:+--samples "$SAMPLES_DIR/sqlite.txt"}) \
  || die "the sqlite scenario failed"
RESULTS+=("$out")

echo
echo "| scenario | revocations | p50 ms | p99 ms | max ms | mean ms | not refused in 2 s | 200s after the ack (total / max) | target | met |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
for r in "${RESULTS[@]}"; do
  IFS=$'\t' read -r label n p50 p99 max mean timeouts stale_total stale_max <<<"$r"
  case $label in
    postgres) name="PostgreSQL: logout on replica A → refused by replica B"; target=100 ;;
    sqlite)   name="SQLite: \`tokens revoke --session\` (CLI process) → refused by the proxy"; target=50 ;;
  esac
  met=$(awk -v p="$p99" -v t="$target" -v o="$timeouts" 'BEGIN { print (p < t && o == 0) ? "yes" : "**no**" }')
  printf '| %s | %s | %.2f | %.2f | %.2f | %.2f | %s | %s / %s | p99 < %s ms | %s |\n' \
    "$name" "$n" "$p50" "$p99" "$max" "$mean" "$timeouts" "$stale_total" "$stale_max" "$target" "$met"
done
echo
echo "Time from the revocation's acknowledgement (the 204 of POST /logout; the exit of the CLI process) to the first 401 on the other process, GETs back to back on one keep-alive connection; each revocation after a random 0–$JITTER_MS ms pause."
echo "Verdict cache: $CACHE_TEXT. Machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), Linux $(uname -r). tokengate $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'). Command: bench/propagation.sh --count $COUNT"
for n in "${NOTES[@]}"; do echo; echo "Note: $n"; done
