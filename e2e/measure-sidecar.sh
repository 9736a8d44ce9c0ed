#!/usr/bin/env bash
# Size, memory, idle CPU and start-up time of tokenvend-sidecar as the image ships it: the static
# musl build of .ci/build-static.sh with the size-optimised `sidecar` profile (opt-level z, fat LTO,
# panic=abort, stripped), running against the real tokenvend-sts and moto in both modes. Prints the
# stripped binary size and the steady RSS after SECONDS.
#   bash e2e/measure-sidecar.sh [SECONDS]
# TOKENVEND_MEASURE_SIDECAR=PATH measures that sidecar binary instead (e.g. the glibc build in
# target/sidecar/, or an older build, to compare).
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/lib.sh"
# Nothing routes to these local servers: they stop at once when killed, freeing their ports.
export TOKENVEND_SHUTDOWN_DELAY_SECONDS=0
cd "$ROOT"
SECS=${1:-20}
ensure_debs
ensure_venv

step "builds: the sidecar as shipped (static musl, sidecar profile) and the workspace (sts, token minting tool)"
bash "$ROOT/.ci/build-static.sh" sidecar >/dev/null
build_bins release
SIDECAR=${TOKENVEND_MEASURE_SIDECAR:-$ROOT/target/static/tokenvend-sidecar}
BIN=$ROOT/target/release
RUN=$WORK/measure-sidecar
rm -rf "$RUN" && mkdir -p "$RUN/keys" "$RUN/web" "$RUN/creds" "$RUN/tls"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT

(cd "$RUN" && exec moto_server -H 127.0.0.1 -p 18600 >"$RUN/moto.log" 2>&1) &
PIDS+=($!)
wait_http http://127.0.0.1:18600/moto-api/ 30
"$BIN/examples/mint-sa-token" --key "$RUN/cluster.pem" --create-key --jwks-out "$RUN/jwks.json" \
  --namespace shop --service-account orders --pod orders-1 >"$RUN/sa-token"
"$BIN/tokenvend-sts" keygen --out "$RUN/keys/k1.pem" >/dev/null
env AWS_ROLE_ARN=arn:aws:iam::123456789012:role/tvm AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=example AWS_ENDPOINT_URL_STS=http://127.0.0.1:18600 \
  POLICY_TEMPLATE_PATH= TOKENVEND_LISTEN=127.0.0.1:18601 LOG_LEVEL=INFO \
  TOKENVEND_VALIDATION=jwks TOKENVEND_OIDC_ISSUER=https://kubernetes.default.svc.cluster.local \
  TOKENVEND_JWKS_FILE="$RUN/jwks.json" TOKENVEND_ISSUER_URL=https://issuer.example.com \
  TOKENVEND_SIGNING_KEY_DIR="$RUN/keys" "$BIN/tokenvend-sts" >"$RUN/sts.log" 2>&1 &
PIDS+=($!)
wait_http http://127.0.0.1:18601/healthz 30
# The same service over TLS, as deployed: a certificate from tokenvend-certs for the Service name
# "localhost" (so the sidecar can dial it by that name), its bundle served at /ca-bundle.
"$BIN/tokenvend-certs" --service localhost --namespace tokenvend --out-dir "$RUN/certs" >/dev/null
env AWS_ROLE_ARN=arn:aws:iam::123456789012:role/tvm AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=example AWS_ENDPOINT_URL_STS=http://127.0.0.1:18600 \
  POLICY_TEMPLATE_PATH= TOKENVEND_LISTEN=127.0.0.1:18603 LOG_LEVEL=INFO \
  TOKENVEND_TLS_CERT="$RUN/certs/tls.crt" TOKENVEND_TLS_KEY="$RUN/certs/tls.key" \
  TOKENVEND_CA_BUNDLE_FILE="$RUN/certs/ca.crt" \
  TOKENVEND_VALIDATION=jwks TOKENVEND_OIDC_ISSUER=https://kubernetes.default.svc.cluster.local \
  TOKENVEND_JWKS_FILE="$RUN/jwks.json" TOKENVEND_ISSUER_URL=https://issuer.example.com \
  TOKENVEND_SIGNING_KEY_DIR="$RUN/keys" "$BIN/tokenvend-sts" >"$RUN/sts-tls.log" 2>&1 &
PIDS+=($!)
wait_http https://localhost:18603/healthz 30 --cacert "$RUN/certs/ca.crt"

first_file() { # FILE START_NS: milliseconds from START_NS until FILE exists
  until [ -e "$1" ]; do sleep 0.002; done
  echo $(( ($(date +%s%N) - $2) / 1000000 ))
}
t0=$(date +%s%N)
"$SIDECAR" --mode web-identity --sa-token-file "$RUN/sa-token" --out-dir "$RUN/web" \
  --exchange-url http://127.0.0.1:18601 >"$RUN/web.log" 2>&1 &
WEB=$!; PIDS+=("$WEB")
web_ms=$(first_file "$RUN/web/token" "$t0")
t0=$(date +%s%N)
"$SIDECAR" --mode credentials --sa-token-file "$RUN/sa-token" --out-dir "$RUN/creds" \
  --exchange-url http://127.0.0.1:18601 --listen 127.0.0.1:18602 >"$RUN/creds.log" 2>&1 &
CREDS=$!; PIDS+=("$CREDS")
creds_ms=$(first_file "$RUN/creds/credentials.json" "$t0")
t0=$(date +%s%N)
TOKENVEND_CA_PEM=$(cat "$RUN/certs/ca.crt") "$SIDECAR" --mode web-identity --sa-token-file "$RUN/sa-token" \
  --out-dir "$RUN/tls" --exchange-url https://localhost:18603 >"$RUN/tls.log" 2>&1 &
TLS=$!; PIDS+=("$TLS")
tls_ms=$(first_file "$RUN/tls/token" "$t0")
# The upstream's own share of that time: tokenvend-sts's latency for those two exchanges.
upstream_us=$(grep '"message":"exchange"' "$RUN/sts.log" | sed 's/.*"latency_us":\([0-9]*\).*/\1/' | head -2 | paste -sd' ')
sleep 2
# Serve the endpoint a little, as SDKs would.
for _ in $(seq 20); do
  curl -fsS -o /dev/null -H "Authorization: $(cat "$RUN/creds/auth-token")" http://127.0.0.1:18602/credentials
done
web_cpu0=$(cpu_ticks "$WEB"); creds_cpu0=$(cpu_ticks "$CREDS"); tls_cpu0=$(cpu_ticks "$TLS")
sleep "$SECS"
hz=$(getconf CLK_TCK)
web_cpu=$(( $(cpu_ticks "$WEB") - web_cpu0 )); creds_cpu=$(( $(cpu_ticks "$CREDS") - creds_cpu0 ))
tls_cpu=$(( $(cpu_ticks "$TLS") - tls_cpu0 ))
# The TLS sidecar looked at the served bundle after its first exchange and found its own.
if grep -E 'keeping the exchange CA bundle|refresh failed' "$RUN/tls.log"; then
  die "the sidecar over TLS failed: $RUN/tls.log"
fi
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
size=$(stat -c %s "$SIDECAR")
step "result"
printf '   stripped binary: %s bytes (%.2f MB): %s\n' "$size" "$(awk -v s="$size" 'BEGIN { print s / 1e6 }')" "$SIDECAR"
printf "   web-identity: RSS %s KiB (peak %s KiB) after %ss\n" "$(rss "$WEB")" "$(hwm "$WEB")" "$SECS"
printf '   credentials:  RSS %s KiB (peak %s KiB) after %ss\n' "$(rss $CREDS)" "$(hwm $CREDS)" "$SECS"
printf '   web-identity over TLS, following the CA: RSS %s KiB (peak %s KiB) after %ss\n' "$(rss "$TLS")" "$(hwm "$TLS")" "$SECS"
printf '   idle CPU over %ss: web-identity %s ticks, credentials %s ticks, over TLS %s ticks (%s ticks = 1 s)\n' "$SECS" "$web_cpu" "$creds_cpu" "$tls_cpu" "$hz"
printf '   start to first file: web-identity %s ms, credentials %s ms; tokenvend-sts latency of those exchanges: %s us\n' \
  "$web_ms" "$creds_ms" "$upstream_us"
printf '   start to first file over TLS (handshake included): web-identity %s ms\n' "$tls_ms"
