#!/usr/bin/env bash
# Load run against the real tokenvend-sts (release build) on cache hits: moto as STS, JWKS
# validation, wrk with keep-alive. Prints requests/s for POST /credentials and, in the same
# run, for GET /healthz as a baseline of the HTTP stack alone. Logging as deployed (LOG_LEVEL=INFO:
# one JSON line per request, here into a file).
#   bash e2e/load-sts.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/lib.sh"
# Nothing routes to these local servers: they stop at once when killed, freeing their ports.
export TOKENVEND_SHUTDOWN_DELAY_SECONDS=0
cd "$ROOT"
DURATION=${1:-10}
CONNS=${2:-64}
ensure_debs
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
ensure_venv

step "release build"
build_bins release
BIN=$ROOT/target/release
RUN=$WORK/load-sts
rm -rf "$RUN" && mkdir -p "$RUN/keys"
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; }
PIDS=()
trap cleanup EXIT

step "moto STS on 127.0.0.1:18500"
(cd "$RUN" && exec moto_server -H 127.0.0.1 -p 18500 >"$RUN/moto.log" 2>&1) &
PIDS+=($!)
wait_http http://127.0.0.1:18500/moto-api/ 30

TOKEN=$("$BIN/examples/mint-sa-token" --key "$RUN/cluster.pem" --create-key --jwks-out "$RUN/jwks.json" \
  --namespace shop --service-account orders --pod orders-1 --ttl 3600)
printf '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/{{ namespace }}/{{ serviceaccount }}/*"}]}' >"$RUN/policy.json"
"$BIN/tokenvend-sts" keygen --out "$RUN/keys/k1.pem" >/dev/null

step "tokenvend-sts on 127.0.0.1:18501"
env AWS_ROLE_ARN=arn:aws:iam::123456789012:role/tvm AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=example AWS_ENDPOINT_URL_STS=http://127.0.0.1:18500 \
  POLICY_TEMPLATE_PATH="$RUN/policy.json" TOKENVEND_LISTEN=127.0.0.1:18501 LOG_LEVEL=INFO \
  TOKENVEND_VALIDATION=jwks TOKENVEND_OIDC_ISSUER=https://kubernetes.default.svc.cluster.local \
  TOKENVEND_JWKS_FILE="$RUN/jwks.json" \
  "$BIN/tokenvend-sts" >"$RUN/sts.log" 2>&1 &
PIDS+=($!)
wait_http http://127.0.0.1:18501/healthz 30

step "1,000 concurrent clients of one service account, cold cache"
ulimit -n 8192 2>/dev/null || true
python3 - "$TOKEN" <<'PY'
import sys, threading, urllib.request
token, n = sys.argv[1], 1000
barrier, results = threading.Barrier(n), []
def one():
    barrier.wait()
    req = urllib.request.Request("http://127.0.0.1:18501/credentials", method="POST",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            results.append(r.status)
    except Exception as e:  # counted, reported below
        results.append(repr(e))
threads = [threading.Thread(target=one) for _ in range(n)]
for t in threads: t.start()
for t in threads: t.join()
ok = sum(1 for r in results if r == 200)
print(f"   {ok} of {n} answered 200")
PY
cold_calls=$(curl -fsS http://127.0.0.1:18501/metrics | awk '/^tokenvend_sts_sts_calls_total/ {s += $2} END {print s}')
echo "   STS AssumeRole calls for those 1,000 requests: $cold_calls"

cat >"$RUN/credentials.lua" <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA

step "wrk: GET /healthz (baseline), ${DURATION}s, $CONNS connections"
wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency http://127.0.0.1:18501/healthz | tee "$RUN/healthz.txt"
step "wrk: POST /credentials (validation + policy + credential cache hits), ${DURATION}s, $CONNS connections"
wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "$RUN/credentials.lua" http://127.0.0.1:18501/credentials | tee "$RUN/credentials.txt"

base=$(awk '/Requests\/sec/ {print $2}' "$RUN/healthz.txt")
creds=$(awk '/Requests\/sec/ {print $2}' "$RUN/credentials.txt")
non2xx=$(awk '/Non-2xx/ {print $5}' "$RUN/credentials.txt")
calls=$(curl -fsS http://127.0.0.1:18501/metrics | awk '/^tokenvend_sts_sts_calls_total/ {print $2}')
step "result"
ratio=$(awk -v a="$creds" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
printf '   /credentials: %s req/s; /healthz baseline: %s req/s; ratio %s; non-2xx: %s; STS calls in all: %s (cold burst: %s)\n' \
  "$creds" "$base" "$ratio" "${non2xx:-0}" "${calls:-?}" "$cold_calls"
