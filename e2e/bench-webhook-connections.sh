#!/usr/bin/env bash
# Webhook memory under connection floods: the release binary's peak RSS while many connections
# are opened at once and held: idle TLS connections, HTTP/1.1 connections each sending a 3 MiB
# body, and HTTP/2 connections each sending bodies on 200 streams (e2e/conn-flood.py). Each
# flood runs on a fresh webhook with the default --max-connections (256), then with the cap
# lifted (65536), which is how the webhook behaved before it had one. The environment is the
# image's (MIMALLOC_ARENA_EAGER_COMMIT=0, MIMALLOC_PURGE_DELAY=0) unless the caller sets those.
# WEBHOOK_BIN=PATH measures another build of tokenvend-webhook (an older commit's, say).
#   bash e2e/bench-webhook-connections.sh
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/lib.sh"
export TOKENVEND_SHUTDOWN_DELAY_SECONDS=0
export MIMALLOC_ARENA_EAGER_COMMIT=${MIMALLOC_ARENA_EAGER_COMMIT-0} MIMALLOC_PURGE_DELAY=${MIMALLOC_PURGE_DELAY-0}
cd "$ROOT"
load_bench_setup bench-webhook-connections
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
"$BIN/tokenvend-certs" --service localhost --namespace bench --out-dir "$RUN/certs" >/dev/null 2>&1
# Thousands of connections need as many file descriptors on both ends.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ulimit -n 20000 2>/dev/null || echo "warning: only $(ulimit -n) file descriptors; the largest floods will be refused early" >&2

flood() { # flood MAX_CONNECTIONS N MODE
  # The cap as a variable: a build from before it had one (WEBHOOK_BIN) ignores it.
  TOKENVEND_MAX_CONNECTIONS=$1 "${WEBHOOK_BIN:-$BIN/tokenvend-webhook}" --listen 127.0.0.1:18443 \
    --probe-listen 127.0.0.1:18080 --log-format json --tls-cert "$RUN/certs/tls.crt" --tls-key "$RUN/certs/tls.key" >>"$RUN/webhook.log" 2>&1 &
  local webhook=$!
  PIDS+=("$webhook")
  wait_http http://127.0.0.1:18080/readyz 30
  printf 'max-connections %-6s ' "$1"
  "$ROOT/.venv/bin/python" e2e/conn-flood.py "$webhook" "$RUN/certs/ca.crt" "$2" "$3"
  kill "$webhook"
  wait "$webhook" 2>/dev/null || true
}

step "connection floods (RSS in KiB)"
for case in "5000 idle" "1000 body" "200 h2" "1000 h2"; do
  read -r n mode <<<"$case"
  flood 256 "$n" "$mode"
  flood 65536 "$n" "$mode"
done
