#!/usr/bin/env bash
# Renders every overlay with `kubectl kustomize`, validates every object with
# `kubernetes-validate --strict` for Kubernetes 1.30 and 1.34, and checks that the webhook's
# ConfigMap is accepted by the real tokenvend-webhook (--check-config). Run by e2e/run-tests.sh
# (which provides kubectl and kubernetes-validate in .venv and the debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=check \
  -keyout "$out/ca.key" -out "$out/ca.crt" -days 1 2>/dev/null
passed=0
failed=0
for overlay in manifests/overlays/*/; do
  name=$(basename "$overlay")
  rendered="$out/$name.yaml"
  if ! kubectl kustomize "$overlay" >"$rendered"; then
    echo "FAIL $name: kubectl kustomize"; failed=$((failed + 1)); continue
  fi
  ok=1
  for version in 1.30.0 1.34.0; do
    if ! kubernetes-validate --strict --quiet -k "$version" "$rendered"; then
      echo "FAIL $name: not valid for Kubernetes $version"; ok=0
    fi
  done
  for kind in Namespace ServiceAccount Role ClusterRole Deployment Service PodDisruptionBudget \
    MutatingWebhookConfiguration Job CronJob ConfigMap NetworkPolicy; do
    grep -q "^kind: $kind$" "$rendered" || { echo "FAIL $name: no $kind"; ok=0; }
  done
  python3 - "$rendered" "$out/$name-config.yaml" "$out/ca.crt" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("tokenvend-webhook-config"))
cfg = yaml.safe_load(cm["data"]["config.yaml"])
cfg["exchangeCaFile"] = sys.argv[3]  # the Secret-mounted path does not exist here
open(sys.argv[2], "w").write(yaml.safe_dump(cfg))
PY
  if ! target/debug/tokenvend-webhook --check-config --config "$out/$name-config.yaml" >/dev/null; then
    echo "FAIL $name: tokenvend-webhook rejects its ConfigMap"; ok=0
  fi
  if ((ok)); then
    echo "ok   $name: $(grep -c '^kind:' "$rendered") objects valid for 1.30 and 1.34; webhook config accepted"
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done
echo "manifests: $passed passed, $failed failed"
((failed == 0))
