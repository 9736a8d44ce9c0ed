#!/usr/bin/env bash
# End to end on a real cluster (kind): builds both images, creates a cluster, installs
# manifests/ in each mode, runs moto as the AWS stand-in (or real AWS for credentials mode when
# E2E_REAL_AWS=1 and AWS credentials are in the environment), then runs a labelled pod whose
# unmodified `aws sts get-caller-identity` must succeed through the injected plumbing.
#
# Needs: docker, kind, kubectl, openssl. Cannot run on machines without a Docker engine.
#   bash e2e/kind/run.sh                    # both modes, moto
#   MODES=credentials bash e2e/kind/run.sh  # one mode
#   KEEP_CLUSTER=1 bash e2e/kind/run.sh     # leave the cluster for inspection
#   RENDER_ONLY=DIR bash e2e/kind/run.sh    # no cluster: write what each mode would apply to
#                                           # DIR/<mode>.yaml and DIR/<mode>-pod.yaml (needs
#                                           # kubectl only; manifests/check.sh validates them)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
CLUSTER=${CLUSTER:-tokenvend-e2e}
MODES=${MODES:-"web-identity credentials"}
TAG=e2e
MOTO_IMAGE=${MOTO_IMAGE:-motoserver/moto:5.1.0}
AWS_CLI_IMAGE=${AWS_CLI_IMAGE:-amazon/aws-cli:2.17.0}
ROLE_ARN=${ROLE_ARN:-arn:aws:iam::123456789012:role/tokenvend-e2e}
MOTO_ENDPOINT=http://moto.aws-standin.svc:5000
WORK=$(mktemp -d)

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
cleanup() {
  rm -rf "$WORK"
  if [ -z "${RENDER_ONLY:-}" ] && [ -z "${KEEP_CLUSTER:-}" ]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# With real AWS there is no endpoint override: the variable is left out, not set empty (an
# empty one is refused by tokenvend-sts, and the AWS SDK for Rust would panic on it).
sts_endpoint_env() {
  local indent=$1
  [ -n "$STS_ENDPOINT" ] || return 0
  printf '%s{name: AWS_ENDPOINT_URL_STS, value: "%s"}\n' "$indent" "$STS_ENDPOINT"
}

# The overlay under test, in $WORK/<mode>: local images and the AWS side of this run.
write_overlay() {
  local mode=$1 dir=$WORK/$1
  mkdir -p "$dir"
  # kustomize refuses an absolute path to a base, so a copy of manifests/ sits beside the overlay.
  [ -d "$WORK/manifests" ] || cp -R "$ROOT/manifests" "$WORK/manifests"
  cat >"$dir/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ../manifests/overlays/$mode
images:
- name: ghcr.io/tokenvend/tokenvend
  newName: tokenvend
  newTag: $TAG
configMapGenerator:
- name: tokenvend-webhook-config
  behavior: merge
  files:
  - config.yaml=webhook-config.yaml
patches:
- target: {kind: Deployment, name: tokenvend-sts}
  # Strategic merge: env entries merge by name, so TOKENVEND_ROLE_ARN is replaced, not repeated.
  patch: |-
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: tokenvend-sts}
    spec:
      template:
        spec:
          containers:
          - name: sts
            env:
            - {name: TOKENVEND_ROLE_ARN, value: "$ROLE_ARN"}
$(sts_endpoint_env '            - ')
- target: {kind: Deployment}
  patch: |-
    - op: add
      path: /spec/template/spec/containers/0/imagePullPolicy
      value: IfNotPresent
YAML
  sed -e "s|^defaultMode: .*|defaultMode: $mode|" \
      -e "s|^sidecarImage: .*|sidecarImage: tokenvend-sidecar:$TAG|" \
      -e "s|^sidecarImagePullPolicy: .*|sidecarImagePullPolicy: Never|" \
      "$ROOT/manifests/overlays/$mode/webhook-config.yaml" >"$dir/webhook-config.yaml"
  echo "region: us-east-1" >>"$dir/webhook-config.yaml"
}

install_mode() {
  local mode=$1 dir=$WORK/$1
  write_overlay "$mode"
  kubectl create namespace tokenvend --dry-run=client -o yaml | kubectl apply -f -
  kubectl -n tokenvend create secret generic tokenvend-sts-aws \
    --from-literal=AWS_ACCESS_KEY_ID="$AWS_KEY_ID" --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET" \
    --dry-run=client -o yaml | kubectl apply -f -
  if [ "$mode" = web-identity ]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/2026-01.pem" 2>/dev/null
    kubectl -n tokenvend create secret generic tokenvend-signing-keys --from-file="$dir/2026-01.pem" \
      --dry-run=client -o yaml | kubectl apply -f -
  fi
  kubectl apply -k "$dir"
  kubectl -n tokenvend wait --for=condition=complete job/tokenvend-certs --timeout=180s
  kubectl -n tokenvend rollout status deployment/tokenvend-webhook --timeout=180s
  kubectl -n tokenvend rollout status deployment/tokenvend-sts --timeout=180s
}

# The labelled pod whose unmodified AWS CLI must get an assumed-role identity.
caller_pod() {
  local mode=$1 ns=$2
  cat <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: caller
  namespace: $ns
  labels:
    tremolo.io/aws-role: "true"
  annotations:
    tremolo.io/aws-role: $ROLE_ARN
    tremolo.io/aws-mode: $mode
spec:
  serviceAccountName: app
  restartPolicy: Never
  containers:
  - name: app
    image: $AWS_CLI_IMAGE
    imagePullPolicy: IfNotPresent
    args: ["sts", "get-caller-identity", "--output", "json"]
$([ -z "$STS_ENDPOINT" ] || printf '    env:\n%s' "$(sts_endpoint_env '    - ')")
YAML
}

run_pod() {
  local mode=$1 ns=e2e-$1
  kubectl create namespace "$ns"
  kubectl -n "$ns" create serviceaccount app
  caller_pod "$mode" "$ns" | kubectl apply -f -
  kubectl -n "$ns" wait --for=jsonpath='{.status.phase}'=Succeeded pod/caller --timeout=180s \
    || { kubectl -n "$ns" describe pod caller; kubectl -n "$ns" logs caller --all-containers; die "$mode: pod did not succeed"; }
  local out
  out=$(kubectl -n "$ns" logs caller -c app)
  echo "$out"
  grep -q '"Arn": "arn:aws:sts::[0-9]*:assumed-role/' <<<"$out" || die "$mode: no assumed-role identity"
  # The denial path: a typo in the role annotation is refused with the reason.
  if kubectl -n "$ns" run typo --image="$AWS_CLI_IMAGE" --labels=tremolo.io/aws-role=true \
      --annotations=tremolo.io/aws-role=not-an-arn --restart=Never 2>"$WORK/denied.txt"; then
    die "$mode: a pod with an invalid role was admitted"
  fi
  grep -q "is not an IAM role ARN" "$WORK/denied.txt" || die "$mode: unexpected denial: $(cat "$WORK/denied.txt")"
  # A misspelled opt-in reaches the webhook through its second entry and is refused too.
  if kubectl -n "$ns" run misspelled --image="$AWS_CLI_IMAGE" --labels=tremolo.io/aws-role=yes \
      --annotations=tremolo.io/aws-role="$ROLE_ARN" --restart=Never 2>"$WORK/misspelled.txt"; then
    die "$mode: a pod labelled tremolo.io/aws-role=yes was admitted"
  fi
  grep -q "neither opts in nor out" "$WORK/misspelled.txt" \
    || die "$mode: unexpected denial: $(cat "$WORK/misspelled.txt")"
  echo "ok: $mode"
}

setup_cluster() {
  log "building images"
  docker build -f Dockerfile.webhook -t "tokenvend:$TAG" .
  docker build -f Dockerfile.sidecar -t "tokenvend-sidecar:$TAG" .

  log "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --wait 120s
  kind load docker-image --name "$CLUSTER" "tokenvend:$TAG" "tokenvend-sidecar:$TAG"
  docker pull "$AWS_CLI_IMAGE" && kind load docker-image --name "$CLUSTER" "$AWS_CLI_IMAGE"

  if [ -z "${E2E_REAL_AWS:-}" ]; then
    log "moto as the AWS STS stand-in"
    docker pull "$MOTO_IMAGE" && kind load docker-image --name "$CLUSTER" "$MOTO_IMAGE"
    kubectl create namespace aws-standin
    kubectl -n aws-standin create deployment moto --image="$MOTO_IMAGE" --port=5000
    kubectl -n aws-standin expose deployment moto --port=5000
    kubectl -n aws-standin rollout status deployment/moto --timeout=180s
    STS_ENDPOINT=$MOTO_ENDPOINT
    AWS_KEY_ID=AKIAIOSFODNN7EXAMPLE
    AWS_SECRET=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
  else
    STS_ENDPOINT=""
    AWS_KEY_ID=${AWS_ACCESS_KEY_ID:?E2E_REAL_AWS needs AWS_ACCESS_KEY_ID}
    AWS_SECRET=${AWS_SECRET_ACCESS_KEY:?E2E_REAL_AWS needs AWS_SECRET_ACCESS_KEY}
  fi
}

if [ -n "${RENDER_ONLY:-}" ]; then
  mkdir -p "$RENDER_ONLY"
  STS_ENDPOINT=""
  [ -n "${E2E_REAL_AWS:-}" ] || STS_ENDPOINT=$MOTO_ENDPOINT
  for mode in $MODES; do
    write_overlay "$mode"
    kubectl kustomize "$WORK/$mode" >"$RENDER_ONLY/$mode.yaml"
    caller_pod "$mode" "e2e-$mode" >"$RENDER_ONLY/$mode-pod.yaml"
  done
  echo "rendered $MODES into $RENDER_ONLY"
  exit 0
fi
for tool in docker kind kubectl openssl; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
setup_cluster
for mode in $MODES; do
  log "mode $mode"
  install_mode "$mode"
  run_pod "$mode"
done
log "all modes passed: $MODES"
