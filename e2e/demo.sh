#!/usr/bin/env bash
# The local demo: builds tokenvend, makes a CA and serving certificate, starts the webhook over
# TLS on loopback and sends a real Deployment's pod through it, then a pod with a typo in its
# role annotation. (The full chain -- sts, sidecar, moto and real SDKs -- joins as those
# components land; see README.)
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_debs
ensure_venv

step "build"
cargo build --workspace --locked -q
BIN=$ROOT/target/debug

DEMO=$WORK/demo
rm -rf "$DEMO" && mkdir -p "$DEMO/certs"
step "certificates (ECDSA P-256 CA + serving cert for localhost)"
(
  cd "$DEMO/certs"
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -subj /CN=tokenvend-demo-ca -days 1 -out ca.crt 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out tls.key 2>/dev/null
  openssl req -new -key tls.key -subj /CN=localhost -out tls.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > ext.cnf
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile ext.cnf -out tls.crt 2>/dev/null
)
echo "   $DEMO/certs/{ca.crt,tls.crt,tls.key}"

step "tokenvend-webhook on https://127.0.0.1:18443 (probes on http://127.0.0.1:18080)"
"$BIN/tokenvend-webhook" --listen 127.0.0.1:18443 --probe-listen 127.0.0.1:18080 \
  --tls-cert "$DEMO/certs/tls.crt" --tls-key "$DEMO/certs/tls.key" \
  --region eu-west-1 --exchange-url https://tokenvend-sts.tokenvend.svc \
  >"$DEMO/webhook.log" 2>&1 &
WEBHOOK=$!
trap 'kill $WEBHOOK 2>/dev/null || true' EXIT
wait_http http://127.0.0.1:18080/readyz 30
echo "   ready (log: $DEMO/webhook.log)"

step "admit the pod of e2e/demo/deployment.yaml"
python3 e2e/demo/admit.py https://localhost:18443/mutate "$DEMO/certs/ca.crt" e2e/demo/deployment.yaml "$DEMO/orders"

step "admit the same pod with a typo in its role annotation"
python3 e2e/demo/admit.py https://localhost:18443/mutate "$DEMO/certs/ca.crt" e2e/demo/deployment.yaml "$DEMO/typo" --role orders-writer

step "webhook log (one JSON line per admission)"
grep '"admission"' "$DEMO/webhook.log" | sed 's/^/   /'
