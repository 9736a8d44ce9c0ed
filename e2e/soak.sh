#!/usr/bin/env bash
# Soak: 60 s at 500 requests/s on tokenvend-webhook while its serving certificate is rotated
# twice (tokenvend-certs renewals swapped in through a ..data symlink, as the kubelet updates a
# Secret volume), and 60 s at 500 requests/s on tokenvend-sts POST /token while its signing key
# is rotated twice.
# Both must end with zero failed requests, and each server's /metrics must count the first load
# plus both rotations and no failed reload (so a rotation that was never taken up, or read
# half-written, fails the soak too). Load tool: oha. Each server's RSS is sampled every
# second under load and reported (first sample, largest, last), to show memory does not creep.
#   bash e2e/soak.sh [SECONDS]
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/lib.sh"
# Nothing routes to these local servers: they stop at once when killed, freeing their ports.
export TOKENVEND_SHUTDOWN_DELAY_SECONDS=0
cd "$ROOT"
SECS=${1:-60}
load_bench_setup soak
mkdir -p "$RUN/keys" "$RUN/serving"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
sample_rss() { # PID FILE: the process's RSS in KiB, once a second, until it is killed
  while sleep 1; do rss "$1" >>"$2" || break; done
}
certs() { "$BIN/tokenvend-certs" --service localhost --namespace soak --out-dir "$RUN/certs" "$@" >/dev/null 2>&1; }
certs --serving-validity-days 1 --renew-before-days 0
install_serving() { # as the kubelet updates a Secret volume: both files swapped by one rename
  local version
  version="..$(date +%s%N)"
  mkdir "$RUN/serving/$version"
  cp "$RUN/certs/tls.crt" "$RUN/certs/tls.key" "$RUN/serving/$version/"
  ln -sfn "$version" "$RUN/serving/..data_tmp"
  mv -T "$RUN/serving/..data_tmp" "$RUN/serving/..data"
  for f in tls.crt tls.key; do
    [ -L "$RUN/serving/$f" ] || ln -s "..data/$f" "$RUN/serving/$f"
  done
}
install_serving
write_review_json "$RUN/review.json"
"$BIN/tokenvend-webhook" --listen 127.0.0.1:18443 --probe-listen 127.0.0.1:18080 --cert-reload-seconds 1 \
  --tls-cert "$RUN/serving/tls.crt" --tls-key "$RUN/serving/tls.key" >"$RUN/webhook.log" 2>&1 &
WEBHOOK=$!; PIDS+=("$WEBHOOK")
wait_http http://127.0.0.1:18080/readyz 30

step "webhook: ${SECS}s at 500 req/s, serving certificate rotated at 1/3 and 2/3"
oha --no-tui --output-format json -n $((SECS * 500)) -q 500 -c 8 -m POST -H 'Content-Type: application/json' -D "$RUN/review.json" \
  --cacert "$RUN/certs/ca.crt" https://localhost:18443/mutate >"$RUN/webhook.json" &
LOAD=$!
sample_rss "$WEBHOOK" "$RUN/webhook.rss" &
SAMPLER=$!
for n in 1 2; do
  sleep $((SECS / 3))
  # The current certificate has n days left: renewing n days before expiry issues a new one
  # (valid n+1 days) from the same CA, as the CronJob does 30 days before expiry.
  certs --serving-validity-days $((n + 1)) --renew-before-days "$n"
  install_serving
done
wait "$LOAD"
kill "$SAMPLER" 2>/dev/null || true
curl -fsS http://127.0.0.1:18080/metrics >"$RUN/webhook.metrics"

step "tokenvend-sts: ${SECS}s at 500 req/s on POST /token, signing key rotated at 1/3 and 2/3"
(cd "$RUN" && exec moto_server -H 127.0.0.1 -p 18700 >"$RUN/moto.log" 2>&1) &
PIDS+=($!)
TOKEN=$("$BIN/examples/mint-sa-token" --key "$RUN/cluster.pem" --create-key --jwks-out "$RUN/jwks.json" \
  --namespace shop --service-account orders --ttl 3600)
"$BIN/tokenvend-sts" keygen --out "$RUN/keys/k1.pem" >/dev/null
env TOKENVEND_LISTEN=127.0.0.1:18701 LOG_LEVEL=INFO TOKENVEND_VALIDATION=jwks \
  TOKENVEND_OIDC_ISSUER=https://kubernetes.default.svc.cluster.local TOKENVEND_JWKS_FILE="$RUN/jwks.json" \
  TOKENVEND_ISSUER_URL=https://issuer.example.com TOKENVEND_SIGNING_KEY_DIR="$RUN/keys" TOKENVEND_KEY_RELOAD_SECONDS=1 \
  "$BIN/tokenvend-sts" >"$RUN/sts.log" 2>&1 &
STS=$!; PIDS+=("$STS")
wait_http http://127.0.0.1:18701/healthz 30
oha --no-tui --output-format json -n $((SECS * 500)) -q 500 -c 8 -m POST -H "Authorization: Bearer $TOKEN" \
  http://127.0.0.1:18701/token >"$RUN/sts.json" &
LOAD=$!
sample_rss "$STS" "$RUN/sts.rss" &
SAMPLER=$!
for n in 2 3; do
  sleep $((SECS / 3))
  "$BIN/tokenvend-sts" keygen --out "$RUN/keys/k$n.pem" >/dev/null
done
wait "$LOAD"
kill "$SAMPLER" 2>/dev/null || true
curl -fsS http://127.0.0.1:18701/metrics >"$RUN/sts.metrics"

step "result"
python3 - "$RUN" <<'PY'
import json, re, sys
run = sys.argv[1]
bad = 0

def metric(name, line):
    """The value of one sample in the server's /metrics text, or 0 when absent."""
    text = open(f"{run}/{name}.metrics").read()
    m = re.search(r"^" + re.escape(line) + r" (\d+)$", text, re.M)
    return int(m.group(1)) if m else 0

# Each rotation must have been taken up, cleanly: the start's load plus two, and no failure.
loads = {
    "webhook": ("tokenvend_webhook_cert_reloads_total", "certificate loads"),
    "sts": ("tokenvend_sts_signing_key_reloads_total", "signing-key loads"),
}
for name, (counter, what) in loads.items():
    ok, err = metric(name, counter + '{result="ok"}'), metric(name, counter + '{result="error"}')
    print(f"   {name}: {ok} {what} (start + rotations), {err} failed")
    if (ok, err) != (3, 0):
        print(f"   {name}: expected 3 loads and no failure")
        bad += 1
keys = metric("sts", "tokenvend_sts_signing_keys_published")
for name, what in [("webhook", "webhook, 2 certificate rotations"), ("sts", f"sts /token, 2 signing-key rotations ({keys} keys published)")]:
    d = json.load(open(f"{run}/{name}.json"))
    codes = d.get("statusCodeDistribution", {})
    errors = d.get("errorDistribution", {})
    ok = codes.get("200", 0)
    failed = sum(v for k, v in codes.items() if k != "200") + sum(errors.values())
    bad += failed
    p = d["latencyPercentiles"]
    rss = [int(line) for line in open(f"{run}/{name}.rss")] or [0]
    print(f"   {what}: {ok} ok, {failed} failed, {d['summary']['requestsPerSec']:.0f} req/s, "
          f"p50 {p['p50'] * 1000:.2f} ms, p99 {p['p99'] * 1000:.2f} ms, "
          f"RSS under load: first {rss[0]:,} KiB, largest {max(rss):,} KiB, last {rss[-1]:,} KiB "
          f"({len(rss)} samples)")
sys.exit(1 if bad else 0)
PY
