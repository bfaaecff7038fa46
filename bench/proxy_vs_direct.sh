#!/usr/bin/env bash
# Side-by-side throughput: the demo's sample backend called directly, the same backend
# behind tokengate on a public route (proxying only), and behind tokengate doing full
# authentication (verify + SQLite allowlist lookup). All runs happen in this one
# invocation, alternating, so machine noise hits each of them.
#
#   bench/proxy_vs_direct.sh [seconds] [connections]
#
# Needs wrk (apt-get install wrk). Prints requests/s and p99 latency of each, and the
# ratios to direct. When nginx is installed (apt-get install nginx), an nginx column
# measures a plain proxy_pass (upstream keepalive, one worker) to the same backend: the
# yardstick tokengate, doing auth, is meant to match. On a 2-core machine wrk, the
# backend and the proxies share the cores, so the absolute numbers are low; the ratios
# are what to compare between commits.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
CONNECTIONS=${2:-32}
ROUNDS=3
PROXY=127.0.0.1:18080
BACKEND=127.0.0.1:18081
NGINX=127.0.0.1:18082

command -v wrk >/dev/null || { echo "bench: wrk is required (apt-get install wrk)" >&2; exit 1; }
cargo build --release --locked --quiet
RUST_LOG=warn ./target/release/tokengate demo --listen "$PROXY" --backend-listen "$BACKEND" >/dev/null 2>&1 &
DEMO=$!
WORK=$(mktemp -d)
cleanup() {
  kill "$DEMO" 2>/dev/null || true
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
if command -v nginx >/dev/null; then
  cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK; proxy_temp_path $WORK;
  fastcgi_temp_path $WORK; uwsgi_temp_path $WORK; scgi_temp_path $WORK;
  upstream backend { server $BACKEND; keepalive 64; }
  server {
    listen $NGINX;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
  nginx -c "$WORK/nginx.conf" -p "$WORK" 2>/dev/null || echo "bench: nginx did not start" >&2
fi
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

has_nginx=0
if [ -f "$WORK/nginx.pid" ]; then
  for _ in $(seq 30); do curl -fs "http://$NGINX/api/bench" >/dev/null 2>&1 && { has_nginx=1; break; }; sleep 0.1; done
fi
[ "$has_nginx" = 1 ] || echo "bench: no nginx; its column reads 0" >&2

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "round  direct_rps  nginx_rps  public_rps  auth_rps  public/direct  auth/direct  auth/nginx  direct_p99_ms  nginx_p99_ms  public_p99_ms  auth_p99_ms"
total_d=0; total_n=0; total_pub=0; total_a=0
for r in $(seq $ROUNDS); do
  read -r d dp <<<"$(run "http://$BACKEND/api/bench")"
  n=0; np=-
  if [ "$has_nginx" = 1 ]; then read -r n np <<<"$(run "http://$NGINX/api/bench")"; fi
  read -r pub pubp <<<"$(run "http://$PROXY/healthz")"
  read -r a ap <<<"$(run "http://$PROXY/api/bench")"
  an=-; [ "$n" -gt 0 ] && an=$(ratio "$a" "$n")
  printf "%5d  %10s  %9s  %10s  %8s  %13s  %11s  %10s  %13s  %12s  %13s  %11s\n" "$r" "$d" "$n" "$pub" "$a" \
    "$(ratio "$pub" "$d")" "$(ratio "$a" "$d")" "$an" "$dp" "$np" "$pubp" "$ap"
  total_d=$((total_d + d)); total_n=$((total_n + n)); total_pub=$((total_pub + pub)); total_a=$((total_a + a))
done
awk -v p="$total_pub" -v a="$total_a" -v d="$total_d" -v n="$total_n" 'BEGIN {
  printf "overall: public/direct %.2f, auth/direct %.2f, auth/public %.2f", p / d, a / d, a / p
  if (n > 0) printf ", public/nginx %.2f, auth/nginx %.2f", p / n, a / n
  printf "\n" }'
