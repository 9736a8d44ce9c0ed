#!/usr/bin/env bash
# Webhook over TLS, keep-alive, a realistic 3-container Deployment pod: throughput and latency
# of the real tokenvend-webhook next to baselines with the same stack, in the same run
# (crates/webhook/examples/baseline-server.rs), all answering the webhook's own response:
#   fixed   - no parsing at all (the issue's baseline)
#   spin-N  - burns N µs of CPU per request first: what any work of that size costs here
#   parse   - decodes the body into a generic JSON value first
# then a fixed 500 requests/s for p99; RSS idle and under load; server CPU and context switches
# per request.
# The servers are measured in turn, ROUNDS times, and medians reported: this shared VM's speed
# drifts by tens of percent within a minute, so one back-to-back pass can mislead.
# Load tool: oha (cargo install, pinned).
#   bash e2e/bench-webhook.sh [SECONDS] [ROUNDS]
# BENCH_PIN=1 runs the load tool on CPU 0 and every server on CPU 1 (taskset; the servers then
# start one runtime worker each), as if the client were another machine: the client's own cost no
# longer grows with the server's, and a server's throughput is what one core of it gives.
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/lib.sh"
# Nothing routes to these local servers: they stop at once when killed, freeing their ports.
export TOKENVEND_SHUTDOWN_DELAY_SECONDS=0
cd "$ROOT"
SECS=${1:-10}
ROUNDS=${2:-3}
SERVER_CPU=() CLIENT_CPU=()
case ${BENCH_PIN:=0} in
  0) ;;
  1)
    [ "$(nproc)" -ge 2 ] || die "BENCH_PIN=1 needs at least 2 CPUs, this machine has $(nproc)"
    SERVER_CPU=(taskset -c 1) CLIENT_CPU=(taskset -c 0)
    ;;
  *) die "BENCH_PIN must be 0 or 1, not '$BENCH_PIN'" ;;
esac
load_bench_setup bench-webhook
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
"$BIN/tokenvend-certs" --service localhost --namespace bench --out-dir "$RUN/certs" >/dev/null 2>&1
write_review_json "$RUN/review.json"
"${SERVER_CPU[@]}" "$BIN/tokenvend-webhook" --listen 127.0.0.1:18443 --probe-listen 127.0.0.1:18080 --log-format json \
  --tls-cert "$RUN/certs/tls.crt" --tls-key "$RUN/certs/tls.key" >"$RUN/webhook.log" 2>&1 &
WEBHOOK=$!; PIDS+=("$WEBHOOK")
wait_http http://127.0.0.1:18080/readyz 30
# The baselines answer with the webhook's own answer to this request, byte for byte.
curl -fsS --cacert "$RUN/certs/ca.crt" -H 'Content-Type: application/json' --data-binary @"$RUN/review.json" \
  https://localhost:18443/mutate >"$RUN/response.json"
# name port extra-args...
SERVERS=("fixed 18444" "spin-5 18445 --spin-us 5" "spin-10 18446 --spin-us 10" "spin-20 18447 --spin-us 20"
  "parse 18448 --parse")
declare -A PID PORT
for s in "${SERVERS[@]}"; do
  read -r name port extra <<<"$s"
  # shellcheck disable=SC2086 # extra holds the flag and its value, split on purpose
  "${SERVER_CPU[@]}" "$BIN/examples/baseline-server" "127.0.0.1:$port" "$RUN/certs/tls.crt" "$RUN/certs/tls.key" "$RUN/response.json" $extra &
  PID[$name]=$!; PORT[$name]=$port; PIDS+=("$!")
done
PID[webhook]=$WEBHOOK; PORT[webhook]=18443
sleep 1
switches() { cat "/proc/$1"/task/*/status | awk '/ctxt_switches/ {n += $2} END {print n}'; } # all threads
idle=$(rss "$WEBHOOK")
load() { # URL extra-args...
  local url=$1; shift
  "${CLIENT_CPU[@]}" oha --no-tui --output-format json -z "${SECS}s" -c 16 -m POST -H 'Content-Type: application/json' -D "$RUN/review.json" \
    --cacert "$RUN/certs/ca.crt" "$@" "$url"
}
measure() { # NAME ROUND: full-speed run, with the server's CPU ticks and context switches around it
  local before switched; before=$(cpu_ticks "${PID[$1]}"); switched=$(switches "${PID[$1]}")
  load "https://localhost:${PORT[$1]}/mutate" >"$RUN/$1-$2.json"
  echo "$before $(cpu_ticks "${PID[$1]}") $switched $(switches "${PID[$1]}")" >"$RUN/$1-$2.ticks"
}
NAMES=(fixed spin-5 spin-10 spin-20 parse webhook)
step "full speed, 16 keep-alive connections, ${SECS}s each, ${#NAMES[@]} servers in turn, ${ROUNDS} rounds"
for round in $(seq "$ROUNDS"); do
  for name in "${NAMES[@]}"; do
    if [ "$name" = webhook ] && [ "$round" = 1 ]; then
      (sleep $((SECS / 2)); rss "$WEBHOOK" >"$RUN/under.rss") &
      SAMPLER=$!
    fi
    measure "$name" "$round"
  done
done
wait "$SAMPLER"
under=$(cat "$RUN/under.rss")
step "fixed 500 requests/s, ${SECS}s"
load https://localhost:18443/mutate -q 500 >"$RUN/webhook-500.json"
python3 - "$RUN" "$idle" "$under" "$(getconf CLK_TCK)" "$ROUNDS" "$BENCH_PIN" "${NAMES[@]}" <<'PY'
import json, statistics, sys
run, idle, under, hz, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
pinned = sys.argv[6] == "1"
names = sys.argv[7:]
labels = {"fixed": "baseline, fixed answer", "parse": "baseline, JSON decode",
          "webhook": "tokenvend-webhook"} | {n: f"baseline, {n[5:]} us spin" for n in names if n.startswith("spin-")}
def get(name):
    d = json.load(open(f"{run}/{name}.json"))
    s, p = d["summary"], d["latencyPercentiles"]
    codes = d.get("statusCodeDistribution", {})
    n = sum(codes.values())
    try:
        a, b, c, d = map(int, open(f"{run}/{name}.ticks").read().split())
        cpu, switches = (b - a) / hz * 1e6 / n, (d - c) / n
    except FileNotFoundError:
        cpu = switches = float("nan")
    return s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000, codes, cpu, switches
print(f"   {rounds} rounds; each line is the round with the median requests/s; ratios are to the"
      " fixed-answer baseline of the same round, median over rounds: requests/s, and server CPU"
      " per request (fixed answer's / this server's)")
print("   " + ("load tool on CPU 0, each server on CPU 1 (BENCH_PIN=1)" if pinned
               else "load tool and servers share all CPUs"))
for name in names:
    runs = [get(f"{name}-{i}") for i in range(1, rounds + 1)]
    x = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    ratio = statistics.median(r[0] / get(f"fixed-{i}")[0] for i, r in enumerate(runs, 1))
    cpu_ratio = statistics.median(get(f"fixed-{i}")[4] / r[4] for i, r in enumerate(runs, 1))
    print(f"   {labels[name]:24} {x[0]:>7,.0f} req/s, ratio {ratio:.2f}, CPU ratio {cpu_ratio:.2f}, p50 {x[1]:.3f} ms, "
          f"p99 {x[2]:.3f} ms, server CPU {x[4]:5.1f} us/req, {x[5]:.2f} context switches/req, "
          f"status {x[3]} "
          f"(rounds: {', '.join(f'{r[0]:,.0f}' for r in runs)})")
w = [get(f"webhook-{i}")[0] / get(f"parse-{i}")[0] for i in range(1, rounds + 1)]
print(f"   ratio webhook / JSON-decode baseline: median {statistics.median(w):.2f}")
r = get("webhook-500")
print(f"   at 500 req/s: {r[0]:,.0f} req/s, p50 {r[1]:.3f} ms, p99 {r[2]:.3f} ms, status {r[3]}")
print(f"   webhook RSS: idle {idle} KiB, under load {under} KiB")
PY
