#!/usr/bin/env bash
# Memory under connection floods: the release servers' peak RSS while many connections are
# opened at once and held (e2e/conn-flood.py): idle TLS connections, HTTP/1.1 connections each
# sending a body, and HTTP/2 connections each sending bodies on 200 streams; then, with exactly as
# many connections held as the cap allows, idle ones (before a first request, or kept alive
# after one), how long one more waits for a slot. Each flood runs on
# a fresh server with its default --max-connections (webhook 256, tokenvend-sts 1024), then
# with the cap lifted (65536), which is how they behaved before they had one. The environment
# is the images' (MIMALLOC_ARENA_EAGER_COMMIT=0, MIMALLOC_PURGE_DELAY=0) unless the caller sets
# those. WEBHOOK_BIN=PATH / STS_BIN=PATH measure other builds (an older commit's, say).
#   bash e2e/bench-connections.sh
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/lib.sh"
export TOKENVEND_SHUTDOWN_DELAY_SECONDS=0
export MIMALLOC_ARENA_EAGER_COMMIT=${MIMALLOC_ARENA_EAGER_COMMIT-0} MIMALLOC_PURGE_DELAY=${MIMALLOC_PURGE_DELAY-0}
cd "$ROOT"
load_bench_setup bench-connections
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
"$BIN/tokenvend-certs" --service localhost --namespace bench --out-dir "$RUN/certs" >/dev/null 2>&1
# Thousands of connections need as many file descriptors on both ends.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ulimit -n 20000 2>/dev/null || echo "warning: only $(ulimit -n) file descriptors; the largest floods will be refused early" >&2

webhook() { # webhook MAX_CONNECTIONS: starts one; sets SERVER
  # The cap as a variable: a build from before it had one ignores it.
  TOKENVEND_MAX_CONNECTIONS=$1 "${WEBHOOK_BIN:-$BIN/tokenvend-webhook}" --listen 127.0.0.1:18443 \
    --probe-listen 127.0.0.1:18080 --log-format json --tls-cert "$RUN/certs/tls.crt" \
    --tls-key "$RUN/certs/tls.key" >>"$RUN/webhook.log" 2>&1 &
  SERVER=$!
  PIDS+=("$SERVER")
  wait_http http://127.0.0.1:18080/readyz 30
}

mkdir -p "$RUN/sts"
"$BIN/examples/mint-sa-token" --key "$RUN/sts/cluster.pem" --create-key --jwks-out "$RUN/sts/jwks.json" \
  --namespace shop --service-account orders --pod orders-1 --ttl 3600 >/dev/null
printf '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/{{ namespace }}/*"}]}' >"$RUN/sts/policy.json"
sts() { # sts MAX_CONNECTIONS: starts one over HTTPS, as the manifests run it; sets SERVER
  env TOKENVEND_MAX_CONNECTIONS="$1" AWS_ROLE_ARN=arn:aws:iam::123456789012:role/tvm AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=example AWS_ENDPOINT_URL_STS=http://127.0.0.1:9 \
    POLICY_TEMPLATE_PATH="$RUN/sts/policy.json" TOKENVEND_LISTEN=127.0.0.1:18501 \
    TOKENVEND_VALIDATION=jwks TOKENVEND_OIDC_ISSUER=https://kubernetes.default.svc.cluster.local \
    TOKENVEND_JWKS_FILE="$RUN/sts/jwks.json" TOKENVEND_TLS_CERT="$RUN/certs/tls.crt" \
    TOKENVEND_TLS_KEY="$RUN/certs/tls.key" "${STS_BIN:-$BIN/tokenvend-sts}" >>"$RUN/sts.log" 2>&1 &
  SERVER=$!
  PIDS+=("$SERVER")
  wait_http https://localhost:18501/healthz 30 --cacert "$RUN/certs/ca.crt"
}

flood() { # flood SERVER MAX_CONNECTIONS N MODE
  "$1" "$2"
  printf '%-7s max-connections %-6s ' "$1" "$2"
  "$ROOT/.venv/bin/python" e2e/conn-flood.py "$SERVER" "$RUN/certs/ca.crt" "$3" "$4"
  kill "$SERVER"
  wait "$SERVER" 2>/dev/null || true
}

step "connection floods (RSS in KiB)"
for case in "5000 idle" "1000 body" "200 h2" "1000 h2"; do
  read -r n mode <<<"$case"
  flood webhook 256 "$n" "$mode"
  flood webhook 65536 "$n" "$mode"
done
step "one more connection while idle ones hold every slot"
flood webhook 256 256 idle
flood webhook 256 256 kept
# tokenvend-sts takes bodies of up to 64 KiB (POST /credentials).
export FLOOD_PORT=18501 FLOOD_PATH=/credentials FLOOD_BODY=65536
for case in "5000 idle" "3000 body"; do
  read -r n mode <<<"$case"
  flood sts 1024 "$n" "$mode"
  flood sts 65536 "$n" "$mode"
done
flood sts 1024 1024 kept
