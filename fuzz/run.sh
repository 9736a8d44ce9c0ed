#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer: `bash fuzz/run.sh [SECONDS] [TARGET...]` builds the
# targets with sanitizer coverage (`cargo fuzz build`, stable Rust, no sanitizer) and runs each
# for SECONDS (default 60), starting from the committed seeds (fuzz/seeds/<target>) and the
# corpus it grew before (fuzz/corpus/<target>, not committed). Prints executions and coverage per
# target; a panic, a hang (> 10 s on one input) or an out-of-memory input fails the run and
# leaves the input in fuzz/artifacts/<target>/ (replay, reusing this build:
# CARGO_PROFILE_RELEASE_LTO=false cargo fuzz run -s none -O TARGET FILE).
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/../e2e/lib.sh"
cd "$ROOT"

seconds=${1:-60}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a whole number of seconds, got '$seconds'"
shift $(($# > 0 ? 1 : 0))
targets=("$@")
ensure_rust_tools
((${#targets[@]})) || mapfile -t targets < <(cargo fuzz list)
for t in "${targets[@]}"; do
  [[ -d fuzz/seeds/$t ]] || die "no fuzz target '$t' with seeds in fuzz/seeds/ (targets: $(cargo fuzz list | xargs))"
done
# All targets at once (one build of the shared dependencies), whichever are run. Without the
# release profile's thin LTO: cargo fuzz already builds each crate as one codegen unit, and LTO
# on top of that tripled the build time here.
export CARGO_PROFILE_RELEASE_LTO=false
cargo fuzz build -s none -O

failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log=fuzz/artifacts/$t/last-run.log
  rc=0
  cargo fuzz run -s none -O "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -max_len=16384 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -n 1 || true)
  printf '  libfuzzer %s: %s executions (budget %s s), %s, exit %s\n' "$t" "${runs:-?}" "$seconds" "${cov:-?}" "$rc"
  if ((rc != 0)); then
    grep -E -A1 'panicked' "$log" | head -n 10 >&2 || true
    grep -E 'ERROR: libFuzzer|Test unit written' "$log" | head -n 5 >&2 || true
    failed+=("$t")
  fi
done
((${#failed[@]} == 0)) || die "libFuzzer found a failing input in: ${failed[*]} (logs and inputs in fuzz/artifacts/)"
