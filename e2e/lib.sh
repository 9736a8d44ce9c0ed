# shellcheck shell=bash
# Shared helpers of the e2e scripts (sourced, not run).
# Everything a script needs is installed here, so both README commands work on a fresh machine.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export WORK=$ROOT/e2e/.work

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Debian packages the scripts call (apt-get works as root on these machines).
ensure_debs() {
  local missing=()
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v nsenter >/dev/null || missing+=(util-linux)
  command -v node >/dev/null || missing+=(nodejs npm)
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  # The sidecar test that moves its wall clock (a suspend and resume) preloads libfaketime.
  compgen -G '/usr/lib/*/faketime/libfaketimeMT.so.1' >/dev/null || missing+=(libfaketime)
  # The e2e test of the arm64 sidecar runs it under user-mode emulation.
  command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
  if ((${#missing[@]})); then
    step "installing Debian packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Rust tools: the toolchain comes with the machine; nextest and cargo-fuzz (stable Rust is
# enough with `-s none`) are installed if absent.
ensure_rust_tools() {
  command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
  command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
  command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version 0.13.2
  command -v cargo-zigbuild >/dev/null || cargo install --locked cargo-zigbuild --version 0.24.1
}

# The static sidecar an arm64 image ships, cross-built on this x86_64 machine with cargo-zigbuild
# (zig from the pinned `ziglang` in .venv: call after ensure_venv). The images themselves build
# natively per architecture (.ci/build-static.sh); this build lets the e2e tests run the aarch64
# binary under qemu-aarch64. Prints its path.
build_arm64_sidecar() {
  local target=aarch64-unknown-linux-musl
  rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2
  (cd "$ROOT" && cargo zigbuild --locked -q --profile sidecar --target "$target" -p tokenvend-sidecar >&2)
  echo "$ROOT/target/$target/sidecar/tokenvend-sidecar"
}

# The same for the control plane (tokenvend-webhook, tokenvend-sts, tokenvend-certs); prints the
# directory that holds them.
build_arm64_control_plane() {
  local target=aarch64-unknown-linux-musl
  rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2
  (cd "$ROOT" && cargo zigbuild --locked -q --release --target "$target" \
    --bin tokenvend-webhook --bin tokenvend-sts --bin tokenvend-certs >&2)
  echo "$ROOT/target/$target/release"
}

# free_port: a TCP port free on loopback now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The HTTP load tool of the benchmarks and the soak, pinned so their figures stay comparable.
ensure_oha() {
  command -v oha >/dev/null || cargo install --locked oha@1.16.0
}

# build_bins PROFILE (dev or release): every binary and example of the project, not the fuzz
# targets (only `fuzz/run.sh` builds those usefully, with coverage).
build_bins() {
  cargo build --profile "$1" --workspace --exclude tokenvend-fuzz --bins --examples --locked -q
}

# load_bench_setup NAME: what the load benchmarks share: Debian packages, the venv, oha, a release
# build of every binary; sets BIN to it and RUN to an emptied $WORK/NAME.
load_bench_setup() {
  ensure_debs
  ensure_venv
  ensure_oha
  step "release build"
  build_bins release
  # shellcheck disable=SC2034 # read by the scripts that source this file
  BIN=$ROOT/target/release
  RUN=$WORK/$1
  rm -rf "$RUN" && mkdir -p "$RUN"
}

# prune_build DIR: with TOKENVEND_PRUNE_BUILDS=1 (CI sets it), delete a build output after its
# last use in the run, so the run fits a machine with little free disk. Off by default: a
# developer keeps their builds.
prune_build() {
  [[ ${TOKENVEND_PRUNE_BUILDS:-0} == 1 ]] || return 0
  [[ -d $1 ]] || return 0
  echo "pruning $1 ($(du -sh "$1" | cut -f1)), not used by any later stage"
  rm -rf "$1"
}

# disk_report [NEED_GB]: free space where the build goes and what target/ holds so far; warns
# (a run that then fails with "No space left on device" says why up front) below NEED_GB.
disk_report() {
  local kib free used
  kib=$(df -k --output=avail "$ROOT" | tail -n 1 | tr -d ' ')
  free=$(numfmt --to=iec --from-unit=1024 "$kib")
  used=$( (du -sh "$ROOT/target" 2>/dev/null || true) | cut -f1)
  echo "disk: ${free} free; target/ holds ${used:-nothing}"
  if [[ -n ${1:-} ]] && ((kib < $1 * 1024 * 1024)); then
    echo "warning: only ${free} free; a run from a fresh clone needs about $1 GB (README, CI)" >&2
  fi
}

# Pinned Python tools (kubectl, kubernetes-validate) in $ROOT/.venv.
ensure_venv() {
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    python3 -m venv "$ROOT/.venv"
  fi
  "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check -r "$ROOT/.ci/requirements.txt"
  export VIRTUAL_ENV=$ROOT/.venv
  export PATH=$ROOT/.venv/bin:$PATH
}

# boto3 from before AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, in its own venv ($WORK/boto3-2023).
ensure_boto3_2023() {
  if [ ! -x "$WORK/boto3-2023/bin/python" ]; then
    python3 -m venv "$WORK/boto3-2023"
  fi
  "$WORK/boto3-2023/bin/pip" install -q --disable-pip-version-check -r "$ROOT/.ci/requirements-boto3-2023.txt"
}

# The pinned AWS JS SDK v3 in $WORK/node (from e2e/clients/package.json).
ensure_node() {
  mkdir -p "$WORK/node"
  cp "$ROOT/e2e/clients/package.json" "$WORK/node/package.json"
  if [ ! -d "$WORK/node/node_modules/@aws-sdk/client-sts" ]; then
    npm install --prefix "$WORK/node" --no-audit --no-fund --loglevel=error >/dev/null
  fi
}

# write_review_json FILE: the benchmark fixture pod inside an AdmissionReview v1 (CREATE).
write_review_json() {
  python3 - "$1" <<'PY'
import json, sys, yaml
sys.path.insert(0, "e2e")
from stack import admission_review
pod = yaml.safe_load(open("crates/webhook/benches/pod-3-containers.yaml"))
json.dump(admission_review(pod, "705ab4f5-6393-11e8-b7cc-42010a800002"), open(sys.argv[1], "w"))
PY
}

# rss PID: the process's resident memory, KiB.
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# cpu_ticks PID: CPU time used so far (utime + stime, all threads), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# wait_http URL [seconds [curl options...]]: until URL answers 200.
wait_http() {
  local url=$1 deadline=$((SECONDS + ${2:-30}))
  shift $(($# < 2 ? $# : 2))
  until curl -fsS -o /dev/null "$@" "$url" 2>/dev/null; do
    ((SECONDS < deadline)) || die "$url did not become ready"
    sleep 0.2
  done
}
