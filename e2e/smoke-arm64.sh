#!/usr/bin/env bash
# The aarch64 build of every binary (what arm64 images ship), cross-built with cargo-zigbuild and
# run under qemu-aarch64 on loopback:
#   tokenvend-certs writes the CA and the serving certificate;
#   tokenvend-webhook answers one admission over TLS with a patch that adds the sidecar;
#   tokenvend-sts (JWKS validation, its own issuer) takes a cluster-signed SA token from the
#   aarch64 sidecar (--once) over TLS and answers with a web-identity token, which the sidecar
#   writes.
# Called by run-tests.sh after the debug build (for mint-sa-token, the "cluster" token issuer);
# uses TOKENVEND_ARM64_SIDECAR when set. Needs root (a private mount namespace gives the sidecar
# an /etc/hosts that names tokenvend-sts, as a cluster's DNS would).
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

bins=$(build_arm64_control_plane)
sidecar=${TOKENVEND_ARM64_SIDECAR:-$(build_arm64_sidecar)}
for b in "$bins/tokenvend-webhook" "$bins/tokenvend-sts" "$bins/tokenvend-certs" "$sidecar"; do
  readelf -h "$b" | grep -q "Machine:.*AArch64" || die "$b is not an aarch64 binary"
done
d=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$d"
}
trap cleanup EXIT
# show_log NAME: a failed step's service log.
show_log() { echo "--- $1 log ---" >&2; cat "$d/$1.log" >&2 || true; }
# wait_for NAME CURL_ARGS...: until curl succeeds (60 s at most; emulation is slow), else NAME's log.
wait_for() {
  local name=$1 deadline=$((SECONDS + 60))
  shift
  until curl -fsS -o /dev/null "$@" 2>/dev/null; do
    ((SECONDS < deadline)) || { show_log "$name"; die "$name (aarch64) did not start"; }
    sleep 0.2
  done
}

qemu-aarch64 "$bins/tokenvend-certs" --service tokenvend-webhook,tokenvend-sts --namespace tokenvend \
  --out-dir "$d/certs" >"$d/certs.log" 2>&1 || { show_log certs; die "tokenvend-certs failed"; }
echo "tokenvend-certs (aarch64): $(cd "$d/certs" && echo *)"

# The webhook: one admission of the benchmark pod, over TLS, verified against the new CA.
wport=$(free_port)
pport=$(free_port)
qemu-aarch64 "$bins/tokenvend-webhook" --listen "127.0.0.1:$wport" --probe-listen "127.0.0.1:$pport" \
  --tls-cert "$d/certs/tls.crt" --tls-key "$d/certs/tls.key" >"$d/webhook.log" 2>&1 &
pids+=($!)
wait_for webhook "http://127.0.0.1:$pport/readyz"
write_review_json "$d/review.json"
curl -fsS --cacert "$d/certs/ca.crt" --resolve "tokenvend-webhook.tokenvend.svc:$wport:127.0.0.1" \
  -H 'content-type: application/json' --data-binary "@$d/review.json" \
  "https://tokenvend-webhook.tokenvend.svc:$wport/mutate" >"$d/answer.json" || { show_log webhook; die "no admission answer"; }
python3 - "$d/answer.json" <<'PY'
import base64, json, sys
r = json.load(open(sys.argv[1]))["response"]
assert r["allowed"] is True, r
ops = json.loads(base64.b64decode(r["patch"]))
assert any(o["path"].startswith("/spec/initContainers") and "tokenvend-sidecar" in json.dumps(o["value"]) for o in ops), ops
print(f"tokenvend-webhook (aarch64): allowed, {len(ops)} patch operations, the sidecar among them")
PY

# tokenvend-sts and the sidecar: a cluster-signed SA token for shop/orders exchanged for a JWT.
issuer=https://kubernetes.default.svc.cluster.local
target/debug/examples/mint-sa-token --key "$d/cluster.pem" --jwks-out "$d/jwks.json" --issuer "$issuer" \
  --namespace shop --service-account orders --audience tokenvend --ttl 600 --create-key >"$d/sa-token"
mkdir "$d/keys"
qemu-aarch64 "$bins/tokenvend-sts" keygen --out "$d/keys/smoke.pem" >/dev/null
sport=$(free_port)
TOKENVEND_LISTEN="127.0.0.1:$sport" TOKENVEND_TLS_CERT="$d/certs/tls.crt" TOKENVEND_TLS_KEY="$d/certs/tls.key" \
  TOKENVEND_VALIDATION=jwks TOKENVEND_OIDC_ISSUER="$issuer" TOKENVEND_JWKS_FILE="$d/jwks.json" \
  TOKENVEND_ISSUER_URL=https://issuer.example TOKENVEND_SIGNING_KEY_DIR="$d/keys" \
  qemu-aarch64 "$bins/tokenvend-sts" >"$d/sts.log" 2>&1 &
pids+=($!)
wait_for sts --cacert "$d/certs/ca.crt" --resolve "tokenvend-sts.tokenvend.svc:$sport:127.0.0.1" \
  "https://tokenvend-sts.tokenvend.svc:$sport/healthz"
echo "127.0.0.1 tokenvend-sts.tokenvend.svc" >"$d/hosts"
mkdir -m 0777 "$d/out"
# shellcheck disable=SC2016 # $1 and $@ are the inner shell's arguments
unshare --mount --propagation private sh -c 'mount --bind "$1" /etc/hosts && shift && exec "$@"' sh "$d/hosts" \
  qemu-aarch64 "$sidecar" --mode web-identity --sa-token-file "$d/sa-token" --out-dir "$d/out" \
  --exchange-url "https://tokenvend-sts.tokenvend.svc:$sport" --ca-file "$d/certs/ca.crt" --once \
  --once-deadline-seconds 60 >"$d/sidecar.log" 2>&1 || { show_log sidecar; show_log sts; die "the aarch64 sidecar got no token"; }
python3 - "$d/out/token" <<'PY'
import base64, json, sys
token = open(sys.argv[1]).read()
assert not token.endswith("\n") and token.count(".") == 2, token[:40]
body = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
assert body["iss"] == "https://issuer.example" and body["sub"] == "system:serviceaccount:shop:orders", body
print(f"tokenvend-sts and tokenvend-sidecar (aarch64): web-identity token for {body['sub']}, aud {body['aud']}")
PY
