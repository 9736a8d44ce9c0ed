#!/usr/bin/env bash
# The static (musl) release builds the images ship. The Dockerfiles run exactly this script, and
# so does the test command, so a broken build step is caught here where no Docker engine runs.
#   bash .ci/build-static.sh control-plane   # tokenvend-webhook, tokenvend-sts, tokenvend-certs
#   bash .ci/build-static.sh sidecar         # tokenvend-sidecar (size profile)
# Output: target/x86_64-unknown-linux-musl/{release,sidecar}/<binary>
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-musl
export CC_x86_64_unknown_linux_musl=musl-gcc
command -v musl-gcc >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null
}
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
case "${1:-}" in
  control-plane)
    cargo build --locked --release --target "$TARGET" \
      --bin tokenvend-webhook --bin tokenvend-sts --bin tokenvend-certs
    ;;
  sidecar)
    cargo build --locked --profile sidecar --target "$TARGET" -p tokenvend-sidecar
    ;;
  *)
    echo "usage: $0 control-plane|sidecar" >&2
    exit 2
    ;;
esac
