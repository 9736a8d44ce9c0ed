#!/usr/bin/env bash
# Webhook memory under large and hostile admission reviews: the release binary's peak RSS
# (VmHWM) answering reviews of the largest accepted size (3 MiB) shaped to need the most memory,
# one at a time on a fresh process, then with 8, 32 and 128 connections sending them at once
# (4 reviews each). The environment is the image's (MIMALLOC_ARENA_EAGER_COMMIT=0,
# MIMALLOC_PURGE_DELAY=0, Dockerfile.webhook) unless the caller sets those variables.
# WEBHOOK_BIN=PATH measures another build of tokenvend-webhook (an older commit's, say).
#   bash e2e/bench-webhook-memory.sh
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/lib.sh"
export TOKENVEND_SHUTDOWN_DELAY_SECONDS=0
export MIMALLOC_ARENA_EAGER_COMMIT=${MIMALLOC_ARENA_EAGER_COMMIT-0} MIMALLOC_PURGE_DELAY=${MIMALLOC_PURGE_DELAY-0}
cd "$ROOT"
load_bench_setup bench-webhook-memory
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
"$BIN/tokenvend-certs" --service localhost --namespace bench --out-dir "$RUN/certs" >/dev/null 2>&1
write_review_json "$RUN/review.json"
# Each shape: the fixture's review with one list filled with as many of its smallest items as
# fit in 3 MiB.
python3 - "$RUN" <<'PY'
import json, sys
run = sys.argv[1]
base = json.load(open(f"{run}/review.json"))
LIMIT = 3 * 1024 * 1024
def fill(name, put, item, one=None):
    review = json.loads(json.dumps(base))
    put(review["request"]["object"], [])
    empty = len(json.dumps(review, separators=(",", ":")))
    one = one or len(json.dumps(item(0), separators=(",", ":"))) + 1
    n = (LIMIT - empty) // one
    while True:
        review = json.loads(json.dumps(base))
        put(review["request"]["object"], [item(i) for i in range(n)])
        text = json.dumps(review, separators=(",", ":"))
        if len(text) <= LIMIT:
            break
        n -= max(1, (len(text) - LIMIT) // one)
    open(f"{run}/{name}.json", "w").write(text)
    print(f"{name}: {n} items, {len(text)} bytes")
def spec(key):
    return lambda o, items: o["spec"].__setitem__(key, items)
def container(key):
    return lambda o, items: o["spec"]["containers"][0].__setitem__(key, items)
def annotation(o, items):
    o["metadata"]["annotations"]["big"] = "".join(items)
def affinity(o, items):
    o["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": items}}}
fill("containers", spec("containers"), lambda i: {"name": f"{i:x}"})
fill("init-containers", spec("initContainers"), lambda i: {"name": f"{i:x}"})
fill("env", container("env"), lambda i: {"name": "A", "value": ""})
fill("env-sources", container("env"), lambda i: {"name": "A", "valueFrom": {}})
fill("command", container("command"), lambda i: "")
fill("volumes", spec("volumes"), lambda i: {"name": ""})
fill("affinity-terms", affinity, lambda i: {})
fill("annotation", annotation, lambda i: "x", one=1)
PY
SHAPES=(containers init-containers env env-sources command volumes affinity-terms annotation)

start() {
  "${WEBHOOK_BIN:-$BIN/tokenvend-webhook}" --listen 127.0.0.1:18443 --probe-listen 127.0.0.1:18080 --log-format json \
    --tls-cert "$RUN/certs/tls.crt" --tls-key "$RUN/certs/tls.key" >>"$RUN/webhook.log" 2>&1 &
  WEBHOOK=$!; PIDS+=("$WEBHOOK")
  wait_http http://127.0.0.1:18080/readyz 30
}
stop() { kill "$WEBHOOK"; wait "$WEBHOOK" 2>/dev/null || true; }
peak() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

step "one review at a time, a fresh webhook each (RSS in KiB)"
printf '%-16s %8s %8s %8s  %s\n' shape idle peak growth answer
for shape in review "${SHAPES[@]}"; do
  start
  idle=$(peak "$WEBHOOK")
  answer=$(curl -sS -o "$RUN/answer.json" -w '%{http_code} %{size_download}' --cacert "$RUN/certs/ca.crt" \
    -H 'Content-Type: application/json' --data-binary @"$RUN/$shape.json" https://localhost:18443/mutate)
  allowed=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['response']; print('allowed' if r['allowed'] else 'denied: ' + r['status']['message'][:70])" "$RUN/answer.json")
  top=$(peak "$WEBHOOK")
  printf '%-16s %8s %8s %8s  HTTP %s bytes, %s\n' "$shape" "$idle" "$top" "$((top - idle))" "$answer" "$allowed"
  stop
done

step "many at once: each connection sends 4 reviews (RSS in KiB)"
printf '%-16s %11s %8s %8s  %s\n' shape connections idle peak "answers; slowest"
for shape in "${SHAPES[@]}"; do
  for c in 8 32 128; do
    start
    idle=$(peak "$WEBHOOK")
    oha --no-tui --output-format json -n $((c * 4)) -c "$c" -m POST -H 'Content-Type: application/json' \
      -D "$RUN/$shape.json" --cacert "$RUN/certs/ca.crt" https://localhost:18443/mutate >"$RUN/oha.json"
    top=$(peak "$WEBHOOK")
    summary=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['statusCodeDistribution'], sum(d['errorDistribution'].values()), 'connection errors;', round(d['summary']['slowest'] * 1000), 'ms')" "$RUN/oha.json")
    printf '%-16s %11s %8s %8s  %s\n' "$shape" "$c" "$idle" "$top" "$summary"
    stop
  done
done
