#!/usr/bin/env bash
# Webhook over TLS, keep-alive, a realistic 3-container Deployment pod: throughput and latency
# of the real tokenvend-webhook next to two baselines with the same stack, in the same run
# (crates/webhook/examples/baseline-server.rs): one answers a fixed response without parsing,
# one decodes the body into a generic JSON value first; then a fixed 500 requests/s for p99;
# RSS idle and under load; server CPU per request. Load tool: oha (cargo install, pinned).
# The three servers are measured in turn, ROUNDS times, and medians reported: this shared VM's
# speed drifts by tens of percent within a minute, so one back-to-back pass can mislead.
#   bash e2e/bench-webhook.sh [SECONDS] [ROUNDS]
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
SECS=${1:-10}
ROUNDS=${2:-3}
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
# The baselines answer with the webhook's own answer to this request, byte for byte.
curl -fsS --cacert "$RUN/certs/ca.crt" -H 'Content-Type: application/json' --data-binary @"$RUN/review.json" \
  https://localhost:18443/mutate >"$RUN/response.json"
"$BIN/examples/baseline-server" 127.0.0.1:18444 "$RUN/certs/tls.crt" "$RUN/certs/tls.key" "$RUN/response.json" &
BASELINE=$!; PIDS+=("$BASELINE")
"$BIN/examples/baseline-server" 127.0.0.1:18445 "$RUN/certs/tls.crt" "$RUN/certs/tls.key" "$RUN/response.json" --parse &
PARSE=$!; PIDS+=("$PARSE")
sleep 1
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, all threads
idle=$(rss "$WEBHOOK")
load() { # URL extra-args...
  local url=$1; shift
  oha --no-tui --output-format json -z "${SECS}s" -c 16 -m POST -H 'Content-Type: application/json' -D "$RUN/review.json" \
    --cacert "$RUN/certs/ca.crt" "$@" "$url"
}
measure() { # NAME PID PORT: full-speed run, with the server's CPU ticks before and after
  local before; before=$(ticks "$2")
  load "https://localhost:$3/mutate" >"$RUN/$1.json"
  echo "$before $(ticks "$2")" >"$RUN/$1.ticks"
}
step "full speed, 16 keep-alive connections, ${SECS}s each, ${ROUNDS} rounds"
for round in $(seq "$ROUNDS"); do
  measure "baseline-$round" "$BASELINE" 18444
  measure "parse-$round" "$PARSE" 18445
  if [ "$round" = 1 ]; then
    (sleep $((SECS / 2)); rss "$WEBHOOK" >"$RUN/under.rss") &
    SAMPLER=$!
  fi
  measure "webhook-$round" "$WEBHOOK" 18443
done
wait "$SAMPLER"
under=$(cat "$RUN/under.rss")
step "fixed 500 requests/s, ${SECS}s"
load https://localhost:18443/mutate -q 500 >"$RUN/webhook-500.json"
python3 - "$RUN" "$idle" "$under" "$(getconf CLK_TCK)" "$ROUNDS" <<'PY'
import json, statistics, sys
run, idle, under, hz, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def get(name):
    d = json.load(open(f"{run}/{name}.json"))
    s, p = d["summary"], d["latencyPercentiles"]
    codes = d.get("statusCodeDistribution", {})
    n = sum(codes.values())
    try:
        a, b = map(int, open(f"{run}/{name}.ticks").read().split())
        cpu = (b - a) / hz * 1e6 / n
    except FileNotFoundError:
        cpu = float("nan")
    return s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000, codes, cpu
def median_run(kind):
    runs = sorted((get(f"{kind}-{i}") for i in range(1, rounds + 1)), key=lambda x: x[0])
    return runs[len(runs) // 2], runs
b, bs = median_run("baseline"); j, js = median_run("parse"); w, ws = median_run("webhook")
r = get("webhook-500")
print(f"   {rounds} rounds; each line is the round with the median requests/s")
for label, x, xs in (("baseline (fixed answer)", b, bs), ("baseline (JSON decode)", j, js), ("tokenvend-webhook", w, ws)):
    print(f"   {label:24} {x[0]:>9,.0f} req/s, p50 {x[1]:.3f} ms, p99 {x[2]:.3f} ms, "
          f"server CPU {x[4]:.1f} us/req, status {x[3]}  (all rounds: "
          + ", ".join(f"{y[0]:,.0f}" for y in xs) + ")")
def ratios(kind):
    return [get(f"webhook-{i}")[0] / get(f"{kind}-{i}")[0] for i in range(1, rounds + 1)]
for label, kind in (("fixed-answer", "baseline"), ("JSON-decode", "parse")):
    rs = ratios(kind)
    print(f"   ratio webhook / {label + ' baseline:':23} median {statistics.median(rs):.2f} "
          f"(per round: {', '.join(f'{x:.2f}' for x in rs)})")
print(f"   at 500 req/s: {r[0]:,.0f} req/s, p50 {r[1]:.3f} ms, p99 {r[2]:.3f} ms, status {r[3]}")
print(f"   webhook RSS: idle {idle} KiB, under load {under} KiB")
PY
