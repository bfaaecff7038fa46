#!/usr/bin/env bash
# Side-by-side throughput: the demo's sample backend called directly, the same backend
# behind tokengate on a public route (proxying only), and behind tokengate doing full
# authentication (verify + SQLite allowlist lookup). All runs happen in this one
# invocation, alternating, so machine noise hits each of them.
#
#   bench/proxy_vs_direct.sh [seconds] [connections]
#
# Needs wrk (apt-get install wrk). Prints requests/s and p99 latency of each, and the
# ratios to direct. On a 2-core machine wrk, the backend and tokengate share the cores,
# so the absolute numbers are low; the ratios are what to compare between commits.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
CONNECTIONS=${2:-32}
ROUNDS=3
PROXY=127.0.0.1:18080
BACKEND=127.0.0.1:18081

command -v wrk >/dev/null || { echo "bench: wrk is required (apt-get install wrk)" >&2; exit 1; }
cargo build --release --locked --quiet
RUST_LOG=warn ./target/release/tokengate demo --listen "$PROXY" --backend-listen "$BACKEND" >/dev/null 2>&1 &
DEMO=$!
trap 'kill $DEMO 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fs "http://$PROXY/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

TOKEN=$(curl -fs -X POST "http://$PROXY/login" -H 'content-type: application/json' -d '{"user":"bench"}' \
  | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
[ -n "$TOKEN" ] || { echo "bench: login through the proxy failed" >&2; exit 1; }

run() { # url -> "rps p99_ms"
  wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -H "Authorization: Bearer $TOKEN" "$1" \
    | awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p=$2} END {
        if (p ~ /ms$/) { sub(/ms/,"",p) } else if (p ~ /us$/) { sub(/us/,"",p); p=p/1000 } else if (p ~ /s$/) { sub(/s/,"",p); p=p*1000 }
        printf "%.0f %.2f", rps, p }'
}

echo "round  direct_rps  public_rps  auth_rps  public/direct  auth/direct  direct_p99_ms  public_p99_ms  auth_p99_ms"
total_d=0; total_pub=0; total_a=0
for r in $(seq $ROUNDS); do
  read -r d dp <<<"$(run "http://$BACKEND/api/bench")"
  read -r pub pubp <<<"$(run "http://$PROXY/healthz")"
  read -r a ap <<<"$(run "http://$PROXY/api/bench")"
  printf "%5d  %10s  %10s  %8s  %13s  %11s  %13s  %13s  %11s\n" "$r" "$d" "$pub" "$a" \
    "$(awk -v a="$pub" -v b="$d" 'BEGIN { printf "%.2f", a / b }')" \
    "$(awk -v a="$a" -v b="$d" 'BEGIN { printf "%.2f", a / b }')" "$dp" "$pubp" "$ap"
  total_d=$((total_d + d)); total_pub=$((total_pub + pub)); total_a=$((total_a + a))
done
awk -v p="$total_pub" -v a="$total_a" -v d="$total_d" 'BEGIN {
  printf "overall: public/direct %.2f, auth/direct %.2f, auth/public %.2f\n", p / d, a / d, a / p }'
