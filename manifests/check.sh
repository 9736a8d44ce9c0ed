#!/usr/bin/env bash
# Renders every overlay with `kubectl kustomize`, validates every object with
# `kubernetes-validate --strict` for Kubernetes 1.30 and 1.34, and checks that the webhook's
# ConfigMap is accepted by the real tokenvend-webhook (--check-config); then the same for what
# e2e/kind/run.sh would apply. Run by e2e/run-tests.sh
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
  # IRSA keeps an AWS_ROLE_ARN a container already has and makes it the service's own role, so
  # the role to vend is set as TOKENVEND_ROLE_ARN.
  if grep -q "name: AWS_ROLE_ARN$" "$rendered"; then
    echo "FAIL $name: sets AWS_ROLE_ARN (use TOKENVEND_ROLE_ARN)"; ok=0
  fi
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
# What e2e/kind/run.sh applies (it needs Docker, so it cannot run here): each mode's overlay as
# that script patches it, with moto and with real AWS, must render, be valid, keep one value per
# env name and carry the STS endpoint override only with moto (an empty one is refused).
for aws in moto real; do
  kind_out="$out/kind-$aws"
  if ! RENDER_ONLY="$kind_out" E2E_REAL_AWS="$([ "$aws" = real ] && echo 1)" \
      bash e2e/kind/run.sh >/dev/null; then
    echo "FAIL kind ($aws): e2e/kind/run.sh does not render"; failed=$((failed + 1)); continue
  fi
  ok=1
  for rendered in "$kind_out"/*.yaml; do
    kubernetes-validate --strict --quiet -k 1.34.0 "$rendered" \
      || { echo "FAIL kind ($aws): $(basename "$rendered") is not valid"; ok=0; }
  done
  if ! python3 - "$kind_out" "$aws" "$out/ca.crt" <<'PY'
import glob, os, sys, yaml
out, aws, ca = sys.argv[1:]
moto = "http://moto.aws-standin.svc:5000"
errors = []
for path in sorted(glob.glob(os.path.join(out, "*.yaml"))):
    name = os.path.basename(path)
    for doc in (d for d in yaml.safe_load_all(open(path)) if d):
        spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc.get("spec", {})
        for c in spec.get("containers", []) if doc["kind"] in ("Deployment", "Pod") else []:
            names = [e["name"] for e in c.get("env", [])]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                errors.append(f"{name}: {doc['metadata']['name']}/{c['name']} repeats {sorted(dup)}")
            endpoint = [e.get("value") for e in c.get("env", []) if e["name"] == "AWS_ENDPOINT_URL_STS"]
            wants = doc["kind"] == "Pod" or doc["metadata"]["name"] == "tokenvend-sts"
            expected = [moto] if aws == "moto" and wants else []
            if endpoint != expected:
                errors.append(f"{name}: {doc['metadata']['name']}/{c['name']} AWS_ENDPOINT_URL_STS {endpoint}, want {expected}")
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("tokenvend-webhook-config"):
            cfg = yaml.safe_load(doc["data"]["config.yaml"])
            cfg["exchangeCaFile"] = ca
            open(path[:-5] + ".config", "w").write(yaml.safe_dump(cfg))
for e in errors:
    print("FAIL kind", aws + ":", e)
sys.exit(1 if errors else 0)
PY
  then ok=0; fi
  for config in "$kind_out"/*.config; do
    target/debug/tokenvend-webhook --check-config --config "$config" >/dev/null \
      || { echo "FAIL kind ($aws): tokenvend-webhook rejects $(basename "$config")"; ok=0; }
  done
  if ((ok)); then
    echo "ok   kind ($aws): $(cat "$kind_out"/*.yaml | grep -c '^kind:') objects valid for 1.34; env and webhook config accepted"
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done
echo "manifests: $passed passed, $failed failed"
((failed == 0))
