#!/usr/bin/env bash
# Every test of the project, from a fresh machine: installs its tools, then format, lints,
# one debug build reused by every stage, unit/golden/integration tests, and the golden pods
# checked with real kubectl and kubernetes-validate.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

step "tools"
ensure_debs
ensure_rust_tools
ensure_venv

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build (debug, all targets)"
cargo build --workspace --all-targets --locked

step "cargo nextest (unit, golden, admission, real binary over TLS)"
cargo nextest run --workspace --locked --no-fail-fast

step "golden pods: kubectl patch --local and kubernetes-validate --strict (1.30, 1.34)"
python3 crates/webhook/tests/check_golden.py
