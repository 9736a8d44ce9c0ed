#!/usr/bin/env bash
# The static (musl) release builds the images ship, for the architecture of the machine that runs
# it. The Dockerfiles run exactly this script, and so does the test command, so a broken build step
# is caught here where no Docker engine runs. Under `docker buildx build --platform linux/arm64` the
# build stage runs as arm64 (natively, or emulated) and so builds arm64 binaries.
#   bash .ci/build-static.sh control-plane   # tokenvend-webhook, tokenvend-sts, tokenvend-certs
#   bash .ci/build-static.sh sidecar         # tokenvend-sidecar (size profile)
#   bash .ci/build-static.sh target          # prints the Rust target it builds for
# Output: the binaries in target/static/ (and target/<rust target>/{release,sidecar}/).
# TOKENVEND_STATIC_ARCH overrides `uname -m` (tests of the mapping).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${TOKENVEND_STATIC_ARCH:-$(uname -m)}
case "$arch" in
  x86_64 | amd64) TARGET=x86_64-unknown-linux-musl ;;
  aarch64 | arm64) TARGET=aarch64-unknown-linux-musl ;;
  *)
    echo "build-static.sh: no static build for architecture $arch (x86_64 and aarch64 are supported)" >&2
    exit 2
    ;;
esac
if [[ ${1:-} == target ]]; then
  echo "$TARGET"
  exit 0
fi
# musl-gcc is the host's: right for the target because the target is the host's architecture.
export "CC_${TARGET//-/_}=musl-gcc"
command -v musl-gcc >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null
}
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
mkdir -p target/static
case "${1:-}" in
  control-plane)
    cargo build --locked --release --target "$TARGET" \
      --bin tokenvend-webhook --bin tokenvend-sts --bin tokenvend-certs
    cp "target/$TARGET/release/tokenvend-webhook" "target/$TARGET/release/tokenvend-sts" \
      "target/$TARGET/release/tokenvend-certs" target/static/
    ;;
  sidecar)
    cargo build --locked --profile sidecar --target "$TARGET" -p tokenvend-sidecar
    cp "target/$TARGET/sidecar/tokenvend-sidecar" target/static/
    ;;
  *)
    echo "usage: $0 control-plane|sidecar|target" >&2
    exit 2
    ;;
esac
