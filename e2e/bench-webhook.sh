#!/usr/bin/env bash
# Webhook over TLS, keep-alive, a realistic 3-container Deployment pod: throughput and latency
# of the real tokenvend-webhook next to a baseline server with the same TLS stack answering a
# fixed response (crates/webhook/examples/baseline-server.rs), in the same run; then a fixed
# 500 requests/s for p99; RSS idle and under load. Load tool: oha (cargo install, pinned).
#   bash e2e/bench-webhook.sh [SECONDS]
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
SECS=${1:-10}
ensure_debs
ensure_venv
command -v oha >/dev/null || cargo install --locked oha@1.16.0
step "release build"
cargo build --release --workspace --bins --examples --locked -q
BIN=$ROOT/target/release
RUN=$WORK/bench-webhook
rm -rf "$RUN" && mkdir -p "$RUN"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
"$BIN/tokenvend-certs" --service localhost --namespace bench --out-dir "$RUN/certs" >/dev/null 2>&1
write_review_json "$RUN/review.json"
"$BIN/tokenvend-webhook" --listen 127.0.0.1:18443 --probe-listen 127.0.0.1:18080 --log-format json \
  --tls-cert "$RUN/certs/tls.crt" --tls-key "$RUN/certs/tls.key" >"$RUN/webhook.log" 2>&1 &
WEBHOOK=$!; PIDS+=("$WEBHOOK")
wait_http http://127.0.0.1:18080/readyz 30
# The baseline answers with the webhook's own answer to this request, byte for byte.
curl -fsS --cacert "$RUN/certs/ca.crt" -H 'Content-Type: application/json' --data-binary @"$RUN/review.json" \
  https://localhost:18443/mutate >"$RUN/response.json"
"$BIN/examples/baseline-server" 127.0.0.1:18444 "$RUN/certs/tls.crt" "$RUN/certs/tls.key" "$RUN/response.json" &
PIDS+=($!)
sleep 1
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
idle=$(rss "$WEBHOOK")
load() { # URL extra-args...
  local url=$1; shift
  oha --no-tui --output-format json -z "${SECS}s" -c 16 -m POST -H 'Content-Type: application/json' -D "$RUN/review.json" \
    --cacert "$RUN/certs/ca.crt" "$@" "$url"
}
step "full speed, 16 keep-alive connections, ${SECS}s each"
load https://localhost:18444/mutate >"$RUN/baseline.json"
load https://localhost:18443/mutate >"$RUN/webhook.json" &
LOAD=$!
sleep $((SECS / 2))
under=$(rss "$WEBHOOK")
wait "$LOAD"
step "fixed 500 requests/s, ${SECS}s"
load https://localhost:18443/mutate -q 500 >"$RUN/webhook-500.json"
python3 - "$RUN" "$idle" "$under" <<'PY'
import json, sys
run, idle, under = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def get(name):
    d = json.load(open(f"{run}/{name}.json"))
    s, p = d["summary"], d["latencyPercentiles"]
    codes = d.get("statusCodeDistribution", {})
    return s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000, codes
b = get("baseline"); w = get("webhook"); r = get("webhook-500")
print(f"   baseline (fixed answer): {b[0]:,.0f} req/s, p50 {b[1]:.3f} ms, p99 {b[2]:.3f} ms, status {b[3]}")
print(f"   tokenvend-webhook:       {w[0]:,.0f} req/s, p50 {w[1]:.3f} ms, p99 {w[2]:.3f} ms, status {w[3]}")
print(f"   ratio webhook/baseline:  {w[0] / b[0]:.2f}")
print(f"   at 500 req/s:            {r[0]:,.0f} req/s, p50 {r[1]:.3f} ms, p99 {r[2]:.3f} ms, status {r[3]}")
print(f"   webhook RSS: idle {idle} KiB, under load {under} KiB")
PY
