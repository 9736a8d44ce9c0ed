#!/usr/bin/env bash
# Every test of the project, from a fresh machine: installs its tools, then format, lints,
# one debug build reused by every stage, unit/golden/integration tests, and the golden pods
# checked with real kubectl and kubernetes-validate.
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

step "tools"
ensure_debs
ensure_rust_tools
ensure_venv
ensure_node
ensure_boto3_2023
disk_report 7

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build (debug, all targets)"
cargo build --workspace --all-targets --locked

step "cargo nextest (unit, golden, admission, integration with the real binaries)"
cargo nextest run --workspace --locked --no-fail-fast -E 'not test(/^fuzz_/)'

step "fuzzing (proptest, time-bounded: 60 s per property, executions reported)"
mkdir -p "$WORK"
# Captured output shown as each test ends (--no-capture would run them one at a time).
TOKENVEND_FUZZ_SECONDS=60 cargo nextest run --workspace --locked --no-fail-fast -E 'test(/^fuzz_/)' \
  --success-output immediate --failure-output immediate 2>&1 | tee "$WORK/fuzz.log" |
  grep -E '^ *fuzz [a-z-]+: |Summary|FAIL|panicked'
grep -q 'FAIL\|panicked' "$WORK/fuzz.log" && die "a fuzz property failed (see $WORK/fuzz.log)"

step "fuzzing (libFuzzer via cargo fuzz, coverage-guided: 60 s per target, executions reported)"
bash fuzz/run.sh 60
prune_build target/x86_64-unknown-linux-gnu # where `cargo fuzz build` puts the coverage build

step "golden pods: kubectl patch --local, kubernetes-validate --strict (1.30, 1.34, 1.37), the pod-level resource rule"
python3 crates/webhook/tests/check_golden.py

step "arm64 sidecar (cross-built with cargo-zigbuild, for the e2e test that runs it under qemu)"
TOKENVEND_ARM64_SIDECAR=$(build_arm64_sidecar)
export TOKENVEND_ARM64_SIDECAR
readelf -h "$TOKENVEND_ARM64_SIDECAR" | grep -q "Machine:.*AArch64" || die "$TOKENVEND_ARM64_SIDECAR is not an aarch64 binary"
echo "arm64 sidecar: $(stat -c %s "$TOKENVEND_ARM64_SIDECAR") bytes, $(qemu-aarch64 "$TOKENVEND_ARM64_SIDECAR" --version)"

step "arm64 control plane (cross-built) under qemu: certificates, an admission over TLS, an exchange with the arm64 sidecar"
bash e2e/smoke-arm64.sh

step "end to end: every binary for real, moto, boto3 / AWS CLI / JS SDK v3 / Rust SDK (pytest)"
python3 -m pytest -p no:cacheprovider -q e2e/test_stack.py e2e/test_e2e.py

step "the demo (the README's first command) on the same build: it fails unless the app gets its role and the typo is refused"
python3 e2e/demo.py
prune_build target/aarch64-unknown-linux-musl

step "manifests: kubectl kustomize + kubernetes-validate --strict (1.30, 1.34, 1.37) + namespace references + webhook --check-config"
bash manifests/check.sh

step "shellcheck (scripts) and hadolint (Dockerfiles)"
shellcheck -x e2e/*.sh e2e/kind/run.sh .ci/run .ci/build-static.sh manifests/check.sh fuzz/run.sh
hadolint Dockerfile.webhook Dockerfile.sidecar
echo "shellcheck and hadolint clean"

step "static musl builds, exactly as the Dockerfiles run them"
disk_report
prune_build target/debug
# The build follows the machine's architecture (an arm64 `docker buildx` stage builds arm64).
for pair in x86_64=x86_64 amd64=x86_64 aarch64=aarch64 arm64=aarch64; do
  got=$(TOKENVEND_STATIC_ARCH=${pair%%=*} bash .ci/build-static.sh target)
  [[ $got == "${pair#*=}-unknown-linux-musl" ]] || die "build-static.sh builds $got on ${pair%%=*}"
done
if TOKENVEND_STATIC_ARCH=riscv64 bash .ci/build-static.sh target 2>/dev/null; then
  die "build-static.sh accepted an architecture it cannot build"
fi
bash .ci/build-static.sh control-plane
bash .ci/build-static.sh sidecar
case "$(uname -m)" in
  x86_64) machine="X86-64" ;;
  aarch64) machine="AArch64" ;;
  *) machine="?" ;;
esac
for bin in tokenvend-webhook tokenvend-sts tokenvend-certs tokenvend-sidecar; do
  path=target/static/$bin
  if readelf -l "$path" | grep -q "program interpreter"; then die "$path is not statically linked"; fi
  readelf -h "$path" | grep -q "Machine:.*$machine" || die "$path is not a $(uname -m) binary"
  "$path" --version
done
echo "static binaries: $(uname -m), $(bash .ci/build-static.sh target)"
size=$(stat -c %s target/static/tokenvend-sidecar)
echo "static sidecar: $size bytes (budget 6 MB)"
((size <= 6000000)) || die "the sidecar binary grew past its 6 MB budget"
disk_report
