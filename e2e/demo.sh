#!/usr/bin/env bash
# The local demo: builds tokenvend, makes certificates with tokenvend-certs, starts moto (AWS STS),
# tokenvend-sts and tokenvend-webhook, sends a real Deployment's pod through the webhook over TLS,
# and runs the mutated pod with a kubelet stand-in (own network namespace, bind-mounted volumes,
# minted SA token): an unmodified `aws sts get-caller-identity` prints the assumed role.
# Needs root (network and mount namespaces), as on these machines.
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_debs
ensure_venv
ensure_node
step "build"
build_bins dev
python3 e2e/demo.py
