#!/usr/bin/env bash
# Renders every overlay with `kubectl kustomize`, validates every object with
# `kubernetes-validate --strict` for Kubernetes 1.30, 1.34 and 1.37, and checks with check-render.py that
# every namespace reference holds, that every served port is open to any source, and that the real
# tokenvend-webhook accepts its configuration (--check-config); runs the real tokenvend-sts with each
# overlay's env and asks what its sidecars ask (check-sts-env.py); then the same installed into another
# namespace, and for what e2e/kind/run.sh would apply. Run by e2e/run-tests.sh (which provides
# kubectl and kubernetes-validate in .venv and the debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=check \
  -keyout "$out/ca.key" -out "$out/ca.crt" -days 1 2>/dev/null
passed=0
failed=0
# check_render LABEL RENDERED NAMESPACE: each problem check-render.py finds as a FAIL line;
# status 1 if there is any.
check_render() {
  local problems line
  problems=$(python3 manifests/check-render.py target/debug/tokenvend-webhook "$out/ca.crt" \
    "$2" "$3") && return 0
  while IFS= read -r line; do echo "FAIL $1: $line"; done <<<"$problems"
  return 1
}
# tally OK MESSAGE: count one check, printing MESSAGE when it passed.
tally() {
  if (($1)); then echo "ok   $2"; passed=$((passed + 1)); else failed=$((failed + 1)); fi
}
for overlay in manifests/overlays/*/; do
  name=$(basename "$overlay")
  rendered="$out/$name.yaml"
  if ! kubectl kustomize "$overlay" >"$rendered"; then
    echo "FAIL $name: kubectl kustomize"; failed=$((failed + 1)); continue
  fi
  ok=1
  for version in 1.30.0 1.34.0 1.37.0; do
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
  check_render "$name" "$rendered" tokenvend || ok=0
  # The real tokenvend-sts with this overlay's env, asked what this overlay's sidecars ask.
  if ! problem=$(python3 manifests/check-sts-env.py target/debug "$rendered" "$name"); then
    echo "FAIL $name: tokenvend-sts with the overlay's env: $problem"; ok=0
  fi
  tally "$ok" "$name: $(grep -c '^kind:' "$rendered") objects valid for 1.30, 1.34 and 1.37; namespace references, open ports and webhook config hold; tokenvend-sts with its env serves its sidecars"
done
# Installed into another namespace, both ways the README gives: `namespace:` changed in the base
# (its replacements carry the name into every field that names it), and a kustomization of one's
# own with `namespace:` and a copy of that replacements block. Every reference must follow.
moved="$out/moved"
mkdir -p "$moved/mine"
cp -r manifests "$moved/"
sed -i 's/^namespace: tokenvend$/namespace: platform-creds/' "$moved/manifests/base/kustomization.yaml"
python3 - manifests/base/kustomization.yaml "$moved/mine/kustomization.yaml" <<'PY'
import sys, yaml
base = yaml.safe_load(open(sys.argv[1]))
mine = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": "team-aws", "resources": ["../original/overlays/credentials"],
        "replacements": base.get("replacements", [])}
open(sys.argv[2], "w").write(yaml.safe_dump(mine))
PY
cp -r manifests "$moved/original"
for variant in web-identity:platform-creds credentials:platform-creds mine:team-aws; do
  dir=${variant%%:*} ns=${variant#*:}
  [ "$dir" = mine ] && src="$moved/mine" || src="$moved/manifests/overlays/$dir"
  rendered="$out/moved-$dir.yaml"
  ok=1
  if ! kubectl kustomize "$src" >"$rendered"; then
    echo "FAIL $dir in $ns: kubectl kustomize"; failed=$((failed + 1)); continue
  fi
  kubernetes-validate --strict --quiet -k 1.34.0 "$rendered" \
    || { echo "FAIL $dir in $ns: not valid for Kubernetes 1.34"; ok=0; }
  check_render "$dir in $ns" "$rendered" "$ns" || ok=0
  tally "$ok" "$dir in namespace $ns: valid for 1.34; every namespace reference follows"
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
  if ! python3 - "$kind_out" "$aws" <<'PY'
import glob, os, sys, yaml
out, aws = sys.argv[1:]
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
for e in errors:
    print("FAIL kind", aws + ":", e)
sys.exit(1 if errors else 0)
PY
  then ok=0; fi
  for rendered in "$kind_out"/*.yaml; do
    case $rendered in *-pod.yaml) continue ;; esac
    check_render "kind ($aws) $(basename "$rendered")" "$rendered" tokenvend || ok=0
  done
  tally "$ok" "kind ($aws): $(cat "$kind_out"/*.yaml | grep -c '^kind:') objects valid for 1.34; env, namespace references, open ports and webhook config hold"
done
echo "manifests: $passed passed, $failed failed"
((failed == 0))
