#!/usr/bin/env bash
# bench/hop.sh: what one hop through tokengate costs, side by side with nginx.
#
# WHAT IT MEASURES
#   For each setup below, wrk drives keep-alive GETs through the proxy under test to a
#   fast Rust echo backend (examples/bench_echo.rs), and the harness reports
#     - req/s, p50 and p99 latency (wrk --latency),
#     - the proxy process's user and system CPU time per request, in µs: utime and
#       stime (fields 14 and 15 of /proc/PID/stat, in clock ticks) read before and
#       after the run, divided by the requests wrk completed; for nginx, its worker,
#     - the proxy's resident memory after the run (VmRSS),
#     - ratios to nginx (req/s and CPU per request).
#   Setups:
#     direct      wrk → backend, no proxy (CPU n/a)
#     nginx       nginx proxy_pass: 1 worker, upstream keepalive 64, HTTP/1.1, no logs
#     public      tokengate, a public route (/public/*): proxying, no authentication
#     hs256       tokengate, HS256 + SQLite allowlist, BENCH_TOKENS tokens rotating
#     rs256       same with RS256 tokens
#     es256       same with ES256 tokens
#     hs256_1m    HS256 with BENCH_BIG (1M) live tokens in the store, BENCH_TOKENS of
#                 them rotating
#     distinct    HS256, a token used once per request (BENCH_DISTINCT tokens, each used
#                 once before any repeats; cache misses once the verdict cache exists)
#     nocache     HS256 with the verdict cache off and BENCH_BIG live tokens in the
#                 store (BENCH_TOKENS of them rotating): every request verifies and
#                 reads the store (not in the default set; for the scaling figures)
#     postgres    HS256 + allowlist on PostgreSQL, BENCH_TOKENS tokens rotating
#   Every request of every setup (direct and nginx included) carries one Authorization
#   header from a rotating token file (bench/rotate_tokens.lua), so the load generator
#   does the same work everywhere. Tokens come from examples/bench_tokens.rs (1,000
#   users × 10 tokens for 10k) and are written straight into the allowlist tables
#   tokengate created, hashed the way tokengate hashes them.
#
#   Pinning: the proxy under test (every tokengate process, the nginx worker) on core 0;
#   wrk and the backend on core 1 (`taskset`). tokengate then sees one CPU, so its
#   runtime runs one worker thread. All tokengate instances stay up for the whole run
#   (warm caches, as in production), but only the one under test runs: the others are
#   stopped with SIGSTOP (BENCH_PAUSE_IDLE=0 leaves them running), so that their feed
#   polls do not share core 0 with it. The PostgreSQL server is not pinned, and its CPU
#   is not in the tokengate column.
#   Rounds alternate (round 1: every setup, round 2: every setup, ...) so that machine
#   noise hits all setups alike; the table shows the median of each column over the
#   rounds. Each measured run is preceded by an unmeasured warm-up run.
#   A `[cache]` section (SPEC §9) goes into the generated configs only when
#   `tokengate check-config` accepts it; the output says whether the cache was on.
#
# HOW TO RUN
#   bench/hop.sh                    # full run: 3 rounds × 5 s per setup, ~3.5 minutes
#   BENCH_QUIET_WAIT=30 bench/hop.sh   # same, each run waiting (≤ 30 s) for idle cores
#   BENCH_QUICK=1 bench/hop.sh      # smoke run for CI: 1 round × 1 s, 1k tokens, no 1M
#   BENCH_SETUPS=nginx,public,hs256 bench/hop.sh    # a subset
#   It builds target/release/tokengate and the examples first (cargo build --release).
#   Needs wrk (installed with apt-get when missing and running as root); nginx too
#   (skipped with a note if it cannot be installed); PostgreSQL for the postgres setup
#   (skipped with a note when pg_isready fails); curl, taskset, psql.
#
# KNOBS (environment)
#   BENCH_SECONDS (5)  BENCH_ROUNDS (3)  BENCH_WARMUP (1 s; 0 = none)
#   BENCH_CONNECTIONS (64)  BENCH_THREADS (1, wrk threads)
#   BENCH_TOKENS (10000)  BENCH_BIG (1000000)  BENCH_DISTINCT (200000)
#   BENCH_USERS (tokens ÷ 10: how many distinct users the tokens of a setup belong to)
#   BENCH_QUIET_WAIT (0; N = before each run, wait up to N s for both cores to be
#   under 15% busy: useful on a shared machine)
#   BENCH_SETUPS (all)  BENCH_PORT_BASE (18100: uses BASE+1 .. BASE+30)
#   BENCH_PG_URL (postgres://postgres@127.0.0.1:5432/test; a schema bench_hop_PID is
#   created in it and dropped at exit)   BENCH_NO_BUILD=1 (use the existing binaries)
#   BENCH_OPEN_RATE (10000 req/s; 0 = skip) BENCH_OPEN_SECONDS (5): the open-loop runs
#   (below) of direct, nginx, public and hs256 at that fixed rate.
#   BENCH_QUICK=1 changes the defaults to 1 s, 1 round, no warm-up, 1k tokens, 20k
#   distinct tokens, no 1M setup, open loop at 2000 req/s for 1 s.
#
#   Then, open loop: wrk's closed loop keeps the proxy's core saturated, so its p99 is
#   queueing. For the latency a hop adds, direct, nginx, public and hs256 also get
#   BENCH_OPEN_RATE requests per second (examples/soak.rs `drive --plain`, 64
#   connections, on core 1), whatever the answers take; latency counts from each
#   request's hand-over to its connection (waits behind slow answers count); p50, p99, p99.9 and the p99
#   added over direct.
#
# OUTPUT
#   Progress and per-round figures on stderr; on stdout markdown tables (medians) that
#   can be pasted into the README, with the machine and the settings under them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  D_SECONDS=1 D_ROUNDS=1 D_WARMUP=0 D_TOKENS=1000 D_DISTINCT=20000 D_BIG=0 D_OPEN_RATE=2000 D_OPEN_SECS=1
else
  D_SECONDS=5 D_ROUNDS=3 D_WARMUP=1 D_TOKENS=10000 D_DISTINCT=200000 D_BIG=1000000 D_OPEN_RATE=10000 D_OPEN_SECS=5
fi
OPEN_RATE=${BENCH_OPEN_RATE:-$D_OPEN_RATE}
OPEN_SECS=${BENCH_OPEN_SECONDS:-$D_OPEN_SECS}
SECS=${BENCH_SECONDS:-$D_SECONDS}
ROUNDS=${BENCH_ROUNDS:-$D_ROUNDS}
WARMUP=${BENCH_WARMUP:-$D_WARMUP}
CONNS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-1}
NTOKENS=${BENCH_TOKENS:-$D_TOKENS}
NDISTINCT=${BENCH_DISTINCT:-$D_DISTINCT}
NBIG=${BENCH_BIG:-$D_BIG}
PORT_BASE=${BENCH_PORT_BASE:-18100}
PG_BASE_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
DEFAULT_SETUPS="direct nginx public hs256 rs256 es256 hs256_1m distinct postgres"
ALL_SETUPS="$DEFAULT_SETUPS nocache"
SETUPS=${BENCH_SETUPS:-$DEFAULT_SETUPS}
USERS_ARGS=(); [ -z "${BENCH_USERS:-}" ] || USERS_ARGS=(--users "$BENCH_USERS")
SETUPS=${SETUPS//,/ }

SECRET="bench-hmac-secret-0123456789abcdef-0123456789abcdef"
TG=$ROOT/target/release/tokengate
ECHO_BIN=$ROOT/target/release/examples/bench_echo
TOKENS_BIN=$ROOT/target/release/examples/bench_tokens
SOAK_BIN=$ROOT/target/release/examples/soak
LUA=$ROOT/bench/rotate_tokens.lua
CLK_TCK=$(getconf CLK_TCK)
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
export RUST_LOG=warn

BACKEND_PORT=$((PORT_BASE + 1))
NGINX_PORT=$((PORT_BASE + 2))

log() { echo "hop: $*" >&2; }
die() { echo "hop: error: $*" >&2; exit 1; }
has_setup() { [[ " $SETUPS " == *" $1 "* ]]; }
human() { # 10000 -> 10k, 1000000 -> 1M
  awk -v n="$1" 'BEGIN { if (n >= 1000000 && n % 1000000 == 0) printf "%dM", n / 1000000;
    else if (n >= 1000 && n % 1000 == 0) printf "%dk", n / 1000; else printf "%d", n }'
}

for s in $SETUPS; do [[ " $ALL_SETUPS " == *" $s "* ]] || die "unknown setup $s (known: $ALL_SETUPS)"; done
[ "$NBIG" -gt 0 ] || SETUPS=$(echo " $SETUPS " | sed 's/ hs256_1m / /; s/ nocache / /')
[ "$(nproc)" -ge 2 ] || die "needs at least 2 cores (proxy on core 0, wrk and backend on core 1)"
for tool in curl taskset; do command -v $tool >/dev/null || die "$tool is required"; done

# --- tools -----------------------------------------------------------------------------
apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  log "installing $* with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; }
}
command -v wrk >/dev/null || apt_install wrk || true
command -v wrk >/dev/null || die "wrk is required (apt-get install wrk)"
NGINX_BIN=$(command -v nginx || true); [ -n "$NGINX_BIN" ] || [ ! -x /usr/sbin/nginx ] || NGINX_BIN=/usr/sbin/nginx
NOTES=()
if has_setup nginx && [ -z "$NGINX_BIN" ]; then
  apt_install nginx || true
  NGINX_BIN=$(command -v nginx || true); [ -n "$NGINX_BIN" ] || [ ! -x /usr/sbin/nginx ] || NGINX_BIN=/usr/sbin/nginx
fi
if has_setup nginx && [ -z "$NGINX_BIN" ]; then
  NOTES+=("nginx skipped: not installed and could not be installed (apt-get install nginx)")
  SETUPS=$(echo " $SETUPS " | sed 's/ nginx / /')
fi
PG_SCHEMA=""
if has_setup postgres; then
  if ! command -v pg_isready >/dev/null || ! pg_isready -q -d "$PG_BASE_URL" 2>/dev/null; then
    NOTES+=("postgres skipped: pg_isready failed for $PG_BASE_URL")
    SETUPS=$(echo " $SETUPS " | sed 's/ postgres / /')
  elif ! command -v psql >/dev/null; then
    NOTES+=("postgres skipped: psql not found")
    SETUPS=$(echo " $SETUPS " | sed 's/ postgres / /')
  fi
fi
SETUPS=$(echo "$SETUPS" | xargs)

# --- build -----------------------------------------------------------------------------
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "building (cargo build --release)"
  nice cargo build --release --locked --quiet --bin tokengate \
    --example bench_echo --example bench_tokens --example soak
fi
for b in "$TG" "$ECHO_BIN" "$TOKENS_BIN" "$SOAK_BIN"; do [ -x "$b" ] || die "$b is missing (build first)"; done

# --- processes and cleanup -------------------------------------------------------------
WORK=$(mktemp -d -t tokengate-hop.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null; kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$PG_SCHEMA" ]; then
    psql -q -X "$PG_BASE_URL" -c "DROP SCHEMA IF EXISTS $PG_SCHEMA CASCADE" >/dev/null 2>&1 \
      || echo "hop: could not drop schema $PG_SCHEMA" >&2
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_http() { # url [tries of 0.1 s] -> 0 once it answers 2xx
  local url=$1 tries=${2:-100}
  for _ in $(seq "$tries"); do curl -fs -o /dev/null "$url" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
read_cpu() { # pid -> "utime stime" in clock ticks (fields 14 and 15; comm may hold spaces)
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'
}
read_core() { # core -> "busy total" ticks of that core from /proc/stat
  awk -v c="cpu$1" '$1 == c { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat
}
read_ctxsw() { # pid -> context switches (voluntary + involuntary) summed over its threads
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}
read_rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# --- backend ---------------------------------------------------------------------------
for p in $BACKEND_PORT $NGINX_PORT $(seq $((PORT_BASE + 10)) $((PORT_BASE + 30))); do
  port_free "$p" || die "port $p is in use (set BENCH_PORT_BASE)"
done
taskset -c 1 "$ECHO_BIN" "127.0.0.1:$BACKEND_PORT" 2>"$WORK/echo.log" &
PIDS+=("$!")
wait_http "http://127.0.0.1:$BACKEND_PORT/" || die "the echo backend did not start: $(cat "$WORK/echo.log")"

# --- nginx -----------------------------------------------------------------------------
NGINX_WORKER=""
if has_setup nginx; then
  N=$WORK/nginx; mkdir -p "$N/logs" "$N/tmp"
  cat >"$N/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process on;
pid $N/nginx.pid;
error_log $N/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $N/tmp/body; proxy_temp_path $N/tmp/proxy;
  fastcgi_temp_path $N/tmp/fastcgi; uwsgi_temp_path $N/tmp/uwsgi; scgi_temp_path $N/tmp/scgi;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
  taskset -c 0 "$NGINX_BIN" -e "$N/logs/error.log" -p "$N" -c "$N/nginx.conf" 2>"$N/stderr.log" &
  NGINX_MASTER=$!
  PIDS+=("$NGINX_MASTER")
  if wait_http "http://127.0.0.1:$NGINX_PORT/api/bench" 50; then
    NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -1)
  fi
  if [ -z "$NGINX_WORKER" ]; then
    NOTES+=("nginx skipped: it did not start ($(tail -1 "$N/logs/error.log" "$N/stderr.log" 2>/dev/null | tr '\n' ' '))")
    SETUPS=$(echo " $SETUPS " | sed 's/ nginx / /'); SETUPS=$(echo "$SETUPS" | xargs)
  fi
fi

# --- tokengate configs -----------------------------------------------------------------
CACHE_BLOCK='[cache]
enabled = true
max_entries = 100000
max_staleness_ms = 100
feed_poll_ms = 25'
config() { # name port jwt-block store-block [extra] -> writes $WORK/name.toml
  local name=$1 port=$2 jwt=$3 store=$4 extra=${5:-}
  cat >"$WORK/$name.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$((port + 1))"

[upstream]
url = "http://127.0.0.1:$BACKEND_PORT"

[jwt]
$jwt
user_claim = "sub"

[store]
$store
strategy = "allowlist"

[routes]
public = ["/public/*"]

$extra
TOML
}
HS_JWT="algorithms = [\"HS256\"]
secret = \"$SECRET\""
sqlite_store() { printf 'backend = "sqlite"\nsqlite_path = "%s"' "$WORK/$1.db"; }

config probe $((PORT_BASE + 28)) "$HS_JWT" "$(sqlite_store probe)"
"$TG" check-config --config "$WORK/probe.toml" >/dev/null 2>"$WORK/probe.err" \
  || die "tokengate check-config refuses the generated config: $(cat "$WORK/probe.err")"
config probe $((PORT_BASE + 28)) "$HS_JWT" "$(sqlite_store probe)" "$CACHE_BLOCK"
if "$TG" check-config --config "$WORK/probe.toml" >/dev/null 2>&1; then
  CACHE_TEXT="on ([cache] enabled, max_entries 100000, max_staleness_ms 100, feed_poll_ms 25)"
else
  CACHE_BLOCK=""; CACHE_TEXT="off (this build does not accept a [cache] section)"
fi
log "verdict cache: $CACHE_TEXT"

declare -A TG_PID TG_PORT TG_FILE
# Only the tokengate under test runs: the others are stopped (SIGSTOP), so that their
# background work (the feed poll every 25 ms) does not run on core 0 during the run.
PAUSE_IDLE=${BENCH_PAUSE_IDLE:-1}
pause() { [ "$PAUSE_IDLE" != 1 ] || kill -STOP "${TG_PID[$1]}"; }
resume() { # name: continue it and wait until it answers (its feed catches up in ms)
  [ "$PAUSE_IDLE" != 1 ] || kill -CONT "${TG_PID[$1]}"
  wait_http "http://127.0.0.1:$((${TG_PORT[$1]} + 1))/readyz" 50 || die "$1 does not answer after SIGCONT"
  sleep 0.2
}
start_tokengate() { # name port-offset alg-label count file-count jwt-block store-block mint-args...
  local name=$1 port=$((PORT_BASE + $2)) label=$3 count=$4 fcount=$5 jwt=$6 store=$7
  shift 7
  config "$name" "$port" "$jwt" "$store" "${CACHE_OVERRIDE:-$CACHE_BLOCK}"
  local cfg=$WORK/$name.toml
  # Any CLI command opens the store and creates tokengate's schema; prune then exits.
  "$TG" prune --config "$cfg" >/dev/null 2>"$WORK/$name.prune.log" \
    || die "$name: tokengate prune (schema creation) failed: $(cat "$WORK/$name.prune.log")"
  log "$name: minting $count $label tokens"
  "$TOKENS_BIN" --alg "$label" --count "$count" --file-count "$fcount" --file "$WORK/$name.tokens" "${USERS_ARGS[@]}" "$@" \
    2>"$WORK/$name.mint.log" || die "$name: bench_tokens failed: $(cat "$WORK/$name.mint.log")"
  sed "s/^/hop: $name: /" "$WORK/$name.mint.log" >&2
  taskset -c 0 "$TG" serve --config "$cfg" 2>"$WORK/$name.log" &
  local pid=$!
  PIDS+=("$pid")
  wait_http "http://127.0.0.1:$((port + 1))/readyz" 150 \
    || die "$name: tokengate not ready: $(tail -3 "$WORK/$name.log")"
  local code
  code=$(curl -s -o "$WORK/$name.check" -w '%{http_code}' \
    -H "Authorization: Bearer $(head -1 "$WORK/$name.tokens")" "http://127.0.0.1:$port/api/bench")
  [ "$code" = 200 ] || die "$name: a registered token got $code: $(cat "$WORK/$name.check")"
  TG_PID[$name]=$pid TG_PORT[$name]=$port TG_FILE[$name]=$WORK/$name.tokens
  pause "$name"
}

need() { for s in "$@"; do has_setup "$s" && return 0; done; return 1; }
# The token file of direct/nginx/public is hs's: same header sizes as the HS256 runs.
if need direct nginx public hs256; then
  start_tokengate hs 10 HS256 "$NTOKENS" "$NTOKENS" "$HS_JWT" "$(sqlite_store hs)" --secret "$SECRET" --sqlite "$WORK/hs.db"
fi
if need rs256; then
  start_tokengate rs 12 RS256 "$NTOKENS" "$NTOKENS" \
    "$(printf 'algorithms = ["RS256"]\npublic_key_file = "%s"' "$ROOT/tests/keys/rsa_public.pem")" \
    "$(sqlite_store rs)" --key-file "$ROOT/tests/keys/rsa_private.pem" --sqlite "$WORK/rs.db"
fi
if need es256; then
  start_tokengate es 14 ES256 "$NTOKENS" "$NTOKENS" \
    "$(printf 'algorithms = ["ES256"]\npublic_key_file = "%s"' "$ROOT/tests/keys/ec256_public.pem")" \
    "$(sqlite_store es)" --key-file "$ROOT/tests/keys/ec256_private.pem" --sqlite "$WORK/es.db"
fi
if need hs256_1m; then
  start_tokengate big 16 HS256 "$NBIG" "$NTOKENS" "$HS_JWT" "$(sqlite_store big)" --secret "$SECRET" --sqlite "$WORK/big.db"
fi
if need nocache; then
  CACHE_OVERRIDE=$'[cache]\nenabled = false' \
    start_tokengate nocache 22 HS256 "$NBIG" "$NTOKENS" "$HS_JWT" "$(sqlite_store nocache)" --secret "$SECRET" --sqlite "$WORK/nocache.db"
fi
if need distinct; then
  start_tokengate distinct 18 HS256 "$NDISTINCT" "$NDISTINCT" "$HS_JWT" "$(sqlite_store distinct)" --secret "$SECRET" --sqlite "$WORK/distinct.db"
fi
if need postgres; then
  PG_SCHEMA=bench_hop_$$
  psql -q -X -v ON_ERROR_STOP=1 "$PG_BASE_URL" -c "CREATE SCHEMA $PG_SCHEMA" >/dev/null \
    || die "cannot create schema $PG_SCHEMA"
  sep='?'; [[ "$PG_BASE_URL" == *\?* ]] && sep='&'
  PG_URL="$PG_BASE_URL${sep}options=-csearch_path%3D$PG_SCHEMA"
  start_tokengate pg 20 HS256 "$NTOKENS" "$NTOKENS" "$HS_JWT" \
    "$(printf 'backend = "postgres"\npostgres_url = "%s"' "$PG_URL")" --secret "$SECRET" --postgres "$PG_URL"
fi

# --- runs ------------------------------------------------------------------------------
setup_target() { # setup -> "url pid tokens-file"
  case $1 in
    direct)   echo "http://127.0.0.1:$BACKEND_PORT/api/bench - ${TG_FILE[hs]}" ;;
    nginx)    echo "http://127.0.0.1:$NGINX_PORT/api/bench $NGINX_WORKER ${TG_FILE[hs]}" ;;
    public)   echo "http://127.0.0.1:${TG_PORT[hs]}/public/bench ${TG_PID[hs]} ${TG_FILE[hs]}" ;;
    hs256)    echo "http://127.0.0.1:${TG_PORT[hs]}/api/bench ${TG_PID[hs]} ${TG_FILE[hs]}" ;;
    rs256)    echo "http://127.0.0.1:${TG_PORT[rs]}/api/bench ${TG_PID[rs]} ${TG_FILE[rs]}" ;;
    es256)    echo "http://127.0.0.1:${TG_PORT[es]}/api/bench ${TG_PID[es]} ${TG_FILE[es]}" ;;
    hs256_1m) echo "http://127.0.0.1:${TG_PORT[big]}/api/bench ${TG_PID[big]} ${TG_FILE[big]}" ;;
    distinct) echo "http://127.0.0.1:${TG_PORT[distinct]}/api/bench ${TG_PID[distinct]} ${TG_FILE[distinct]}" ;;
    postgres) echo "http://127.0.0.1:${TG_PORT[pg]}/api/bench ${TG_PID[pg]} ${TG_FILE[pg]}" ;;
    nocache)  echo "http://127.0.0.1:${TG_PORT[nocache]}/api/bench ${TG_PID[nocache]} ${TG_FILE[nocache]}" ;;
  esac
}
label() {
  local t; t=$(human "$NTOKENS")
  case $1 in
    direct)   echo "direct (wrk → backend, no proxy)" ;;
    nginx)    echo "nginx proxy_pass (1 worker, keepalive)" ;;
    public)   echo "tokengate, public route" ;;
    hs256)    echo "tokengate HS256 + allowlist, $t tokens" ;;
    rs256)    echo "tokengate RS256, $t tokens" ;;
    es256)    echo "tokengate ES256, $t tokens" ;;
    hs256_1m) echo "tokengate HS256, $(human "$NBIG") live tokens ($t rotating)" ;;
    distinct) echo "tokengate HS256, distinct token per request ($(human "$NDISTINCT"))" ;;
    postgres) echo "tokengate HS256 on PostgreSQL, $t tokens" ;;
    nocache)  echo "tokengate HS256, cache off, $(human "$NBIG") live tokens ($t rotating)" ;;
  esac
}

DISTINCT_OFFSET=0
run_wrk() { # seconds url file offset -> "rps p50_ms p99_ms requests non2xx socket_errors"
  taskset -c 1 wrk -t"$THREADS" -c"$CONNS" -d"$1s" --timeout 5s --latency -s "$LUA" "$2" -- "$3" "$4" "$THREADS" 2>&1 \
    | awk '
      function ms(v) { if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
                       if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
                       if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
                       return v + 0 }
      /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
      / requests in / { reqs = $1 }
      /^Requests\/sec:/ { rps = $2 }
      /Non-2xx or 3xx responses:/ { bad = $NF }
      /Socket errors:/ { gsub(/[^0-9 ]/, " "); split($0, a, " "); for (i in a) err += a[i] }
      END { printf "%.0f %.3f %.3f %d %d %d\n", rps, p50, p99, reqs, bad, err }'
}

QUIET_WAIT=${BENCH_QUIET_WAIT:-0}
wait_quiet() { # up to QUIET_WAIT s for both cores to be < 15% busy over 0.5 s
  [ "$QUIET_WAIT" -gt 0 ] || return 0
  local deadline=$((SECONDS + QUIET_WAIT)) a0 a1 b0 b1
  while :; do
    a0=$(read_core 0); a1=$(read_core 1); sleep 0.5; b0=$(read_core 0); b1=$(read_core 1)
    echo "$a0 $b0 $a1 $b1" | awk '{ u0 = ($3 - $1) / ($4 - $2 + 1e-9); u1 = ($7 - $5) / ($8 - $6 + 1e-9)
      exit !(u0 < 0.15 && u1 < 0.15) }' && return 0
    [ $SECONDS -lt $deadline ] || { log "the machine is busy; measuring anyway"; return 0; }
  done
}

RESULTS=$WORK/results.txt; : >"$RESULTS"
instance_of() { # setup -> tokengate instance name, or "" for direct and nginx
  case $1 in
    public|hs256) echo hs ;; rs256) echo rs ;; es256) echo es ;; hs256_1m) echo big ;;
    distinct) echo distinct ;; postgres) echo pg ;; nocache) echo nocache ;; *) echo "" ;;
  esac
}
measure() { # setup round
  local setup=$1 round=$2 url pid file offset=0 line inst
  inst=$(instance_of "$setup")
  wait_quiet
  [ -z "$inst" ] || resume "$inst"
  read -r url pid file <<<"$(setup_target "$setup")"
  if [ "$WARMUP" != 0 ]; then
    [ "$setup" = distinct ] && offset=$DISTINCT_OFFSET
    line=$(run_wrk "$WARMUP" "$url" "$file" "$offset")
    [ "$setup" = distinct ] && DISTINCT_OFFSET=$((DISTINCT_OFFSET + $(echo "$line" | awk '{ print $4 }')))
  fi
  [ "$setup" = distinct ] && offset=$DISTINCT_OFFSET
  local before after rss=- core_before core_after
  core_before=$(read_core 0)
  local sw_before=0 sw_after=0
  [ "$pid" = - ] || { sw_before=$(read_ctxsw "$pid"); before=$(read_cpu "$pid"); }
  line=$(run_wrk "$SECS" "$url" "$file" "$offset")
  [ "$pid" = - ] || { after=$(read_cpu "$pid"); sw_after=$(read_ctxsw "$pid"); rss=$(read_rss_mb "$pid"); }
  core_after=$(read_core 0)
  local rps p50 p99 reqs bad err
  read -r rps p50 p99 reqs bad err <<<"$line"
  [ "$setup" = distinct ] && DISTINCT_OFFSET=$((DISTINCT_OFFSET + reqs))
  local user=- sys=- total=- busy=-
  if [ "$pid" != - ] && [ "$reqs" -gt 0 ]; then
    read -r user sys total busy <<<"$(echo "$before $after" | awk -v hz="$CLK_TCK" -v n="$reqs" -v r="$rps" '{
      u = ($3 - $1) * 1e6 / hz / n; s = ($4 - $2) * 1e6 / hz / n
      printf "%.2f %.2f %.2f %.1f", u, s, u + s, (u + s) * r / 1e4 }')"
  fi
  # Core 0's busy time not spent by the proxy under test: other processes (the idle
  # tokengates, anything else on the machine) competing with it.
  local others
  others=$(echo "$core_before $core_after ${before:-0 0} ${after:-0 0}" | awk '{
    total = $4 - $2; mine = ($7 + $8) - ($5 + $6)
    if (total <= 0) print "-"; else { o = (($3 - $1) - mine) * 100 / total; printf "%.1f", (o < 0 ? 0 : o) } }')
  echo "$setup $round $rps $p50 $p99 $user $sys $total $rss $reqs $bad $err $busy $others" >>"$RESULTS"
  local ctx=-
  [ "$pid" = - ] || [ "$reqs" -eq 0 ] || ctx=$(awk -v a="$sw_before" -v b="$sw_after" -v n="$reqs" 'BEGIN { printf "%.3f", (b - a) / n }')
  printf 'hop: round %d %-9s %8s req/s  p50 %6.2f ms  p99 %6.2f ms  cpu µs/req user %6s sys %6s total %6s  core %5s%%  others on core 0 %5s%%  ctx switches/req %6s  rss %5s MB%s\n' \
    "$round" "$setup" "$rps" "$p50" "$p99" "$user" "$sys" "$total" "$busy" "$others" "$ctx" "$rss" \
    "$( [ "$bad$err" = 00 ] || echo "  !! non-2xx $bad, socket errors $err")" >&2
  [ -z "$inst" ] || pause "$inst"
}

log "setups: $SETUPS; $ROUNDS round(s) × ${SECS} s (warm-up ${WARMUP} s), wrk -t$THREADS -c$CONNS"
for round in $(seq "$ROUNDS"); do
  for setup in $SETUPS; do measure "$setup" "$round"; done
done

# --- open loop -------------------------------------------------------------------------
# wrk's closed loop saturates the proxy's core, so its p99 is queueing. The latency a hop
# adds shows at a fixed rate below saturation: the soak driver's --plain mode sends
# OPEN_RATE GETs per second on 64 connections whatever the answers take, and counts
# latency from each request's hand-over to its connection.
OPEN_RESULTS=$WORK/open.txt; : >"$OPEN_RESULTS"
OPEN_SETUPS=""
for s in direct nginx public hs256; do has_setup "$s" && OPEN_SETUPS="$OPEN_SETUPS $s"; done
if [ "$OPEN_RATE" -gt 0 ] && [ -n "$OPEN_SETUPS" ]; then
  log "open loop: $OPEN_RATE req/s for ${OPEN_SECS} s per setup:$OPEN_SETUPS ($ROUNDS round(s))"
  for round in $(seq "$ROUNDS"); do
    for setup in $OPEN_SETUPS; do
      inst=$(instance_of "$setup")
      wait_quiet
      [ -z "$inst" ] || resume "$inst"
      read -r url _ file <<<"$(setup_target "$setup")"
      hostport=${url#http://}; path=/${hostport#*/}; hostport=${hostport%%/*}
      line=$(taskset -c 1 "$SOAK_BIN" drive --proxy "$hostport" --plain "$path" --bearer "$(head -1 "$file")" \
        --rate "$OPEN_RATE" --seconds "$OPEN_SECS" 2>&1 | awk '$1 ~ /s$/ && NF == 10 { l = $0 } /errors [0-9]+,/ { e = $3 } END { print l, e }')
      # "time requests req/s p50 p99 p99.9 errors violations rss fds errors,"
      read -r _ _ rate p50 p99 p999 _ _ _ _ errors <<<"$line"
      echo "$setup $round $rate $p50 $p99 $p999 ${errors%,}" >>"$OPEN_RESULTS"
      log "open loop round $round $setup: $rate req/s  p50 $p50 ms  p99 $p99 ms  p99.9 $p999 ms  errors ${errors%,}"
      [ -z "$inst" ] || pause "$inst"
    done
  done
fi

# --- table -----------------------------------------------------------------------------
median() { # column setup -> median of that column over the rounds ("-" if none)
  awk -v c="$1" -v s="$2" '$1 == s && $c != "-" { print $c }' "$RESULTS" | sort -g \
    | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
             else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "-") print "n/a"; else printf f, v }'; }

NGINX_RPS=-; NGINX_CPU=-
if has_setup nginx; then NGINX_RPS=$(median 3 nginx); NGINX_CPU=$(median 8 nginx); fi
DIRECT_P99=-; has_setup direct && DIRECT_P99=$(median 5 direct)

echo
echo "| setup | req/s | p50 ms | p99 ms | p99 over direct, ms | user µs/req | sys µs/req | CPU µs/req | proxy core busy | others on core 0 | RSS MB | req/s ÷ nginx | CPU ÷ nginx |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for setup in $SETUPS; do
  rps=$(median 3 "$setup"); p50=$(median 4 "$setup"); p99=$(median 5 "$setup")
  user=$(median 6 "$setup"); sys=$(median 7 "$setup"); total=$(median 8 "$setup"); rss=$(median 9 "$setup")
  busy=$(median 13 "$setup"); others=$(median 14 "$setup")
  added=n/a
  if [ "$DIRECT_P99" != - ] && [ "$setup" != direct ]; then added=$(awk -v a="$p99" -v b="$DIRECT_P99" 'BEGIN { printf "%+.2f", a - b }'); fi
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$setup")" \
    "$(fmt "$rps" %.0f)" "$(fmt "$p50" %.2f)" "$(fmt "$p99" %.2f)" "$added" \
    "$(fmt "$user" %.1f)" "$(fmt "$sys" %.1f)" "$(fmt "$total" %.1f)" "$(fmt "$busy" %.0f%%)" "$(fmt "$others" %.0f%%)" "$(fmt "$rss" %.1f)" \
    "$(ratio "$rps" "$NGINX_RPS")" "$(ratio "$total" "$NGINX_CPU")"
done
echo
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo "Medians of $ROUNDS alternating round(s) of ${SECS} s (after a ${WARMUP} s warm-up), wrk -t$THREADS -c$CONNS, keep-alive GETs, one rotating Authorization header per request."
echo "Proxy on core 0, wrk and the echo backend on core 1 (taskset)$( [ "$PAUSE_IDLE" = 1 ] && echo ', the tokengate instances not under test stopped (SIGSTOP)'); CPU from /proc/PID/stat (utime, stime; nginx: its worker) over the measured run ÷ requests; \"proxy core busy\" = CPU per request × req/s (below ~95%, the load generator on core 1, not the proxy, set the pace); \"others on core 0\" = the share of core 0 used by other processes during the run (a few % on a quiet machine: interrupts, kernel threads; more in the postgres row, where the PostgreSQL server may run; much more means the machine was busy and the run is noisy); RSS after the run."
echo "Verdict cache: $CACHE_TEXT. Machine: $(nproc) cores, ${CPU_MODEL:-unknown CPU}, Linux $(uname -r), load average at start $LOAD_AT_START. tokengate $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' (+ local changes)'). Command: $(env | grep '^BENCH_' | sort | tr '\n' ' ')bench/hop.sh"
if awk '$11 != 0 || $12 != 0 { bad = 1 } END { exit !bad }' "$RESULTS"; then
  echo
  echo "**Warning**: some runs had non-2xx responses or socket errors (see stderr); their figures are not comparable."
fi
if [ -s "$OPEN_RESULTS" ]; then
  open_median() { awk -v c="$1" -v s="$2" '$1 == s { print $c }' "$OPEN_RESULTS" | sort -g \
    | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
  DIRECT_OPEN_P99=$(open_median 5 direct)
  echo
  echo "Open loop at $OPEN_RATE req/s (the soak driver's --plain mode on 64 connections, ${OPEN_SECS} s per run, medians of $ROUNDS round(s); latency from each request's hand-over to its connection, waits behind slower answers included):"
  echo
  echo "| setup | req/s | p50 ms | p99 ms | p99.9 ms | p99 over direct, ms | errors |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for setup in $OPEN_SETUPS; do
    p99=$(open_median 5 "$setup"); added=n/a
    if [ "$DIRECT_OPEN_P99" != - ] && [ "$setup" != direct ]; then added=$(awk -v a="$p99" -v b="$DIRECT_OPEN_P99" 'BEGIN { printf "%+.2f", a - b }'); fi
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$setup")" "$(fmt "$(open_median 3 "$setup")" %.0f)" \
      "$(fmt "$(open_median 4 "$setup")" %.2f)" "$(fmt "$p99" %.2f)" "$(fmt "$(open_median 6 "$setup")" %.2f)" "$added" "$(open_median 7 "$setup")"
  done
fi
for n in "${NOTES[@]}"; do echo; echo "Note: $n"; done
