#!/usr/bin/env bash
# Runs the cargo-fuzz targets of tests/fuzz for SECONDS each (default 20) from their committed
# seed corpus, as many at once as there are cores. Used by .ci/run; by hand:
#   bash .ci/fuzz.sh [SECONDS] [TARGET...]        (all targets when none is named)
# Works on the stable toolchain: no sanitizer (pier is `forbid(unsafe_code)`, so ASan would add
# little and needs nightly), but cargo-fuzz's debug assertions and overflow checks are on.
# New inputs go to a scratch directory: the committed corpus stays as it is. Exits non-zero when a
# target crashes or one of its properties fails; the input that did it is kept in
# tests/fuzz/artifacts/<target>/ and the end of the target's log is printed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_EACH=${1:-20}
shift || true
FUZZ_DIR=tests/fuzz
JOBS=$(nproc)

if (($# > 0)); then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(cargo fuzz list --fuzz-dir "$FUZZ_DIR")
fi
echo "fuzz targets (${#TARGETS[@]}): ${TARGETS[*]}; ${SECONDS_EACH} s each, $JOBS at a time"

t0=$SECONDS
cargo fuzz build --fuzz-dir "$FUZZ_DIR" --sanitizer none
echo "build: $((SECONDS - t0)) s"

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

# One target: its log goes to $SCRATCH/<target>.log.
run_target() {
  local t=$1
  mkdir -p "$SCRATCH/$t"
  # -timeout: an input that takes 10 s is a hang, reported as a failure (not a stuck CI).
  cargo fuzz run --fuzz-dir "$FUZZ_DIR" --sanitizer none "$t" "$SCRATCH/$t" "$FUZZ_DIR/corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -print_final_stats=1 >"$SCRATCH/$t.log" 2>&1
}

# One line per finished target: executions, coverage, corpus; or the failure.
report() {
  local t=$1 rc=$2 log="$SCRATCH/$1.log"
  local runs done_line
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
  if ((rc == 0)); then
    printf '  %-10s ok      %10s runs  %s\n' "$t" "${runs:-?}" "$(sed -E 's/.*(cov: [0-9]+).*(corp: [0-9]+\/[0-9]+[a-zA-Z]*).*(exec\/s: [0-9]+).*/\1 \2 \3/' <<<"$done_line")"
  else
    printf '  %-10s FAILED (exit %d) after %s runs; end of its log:\n' "$t" "$rc" "${runs:-?}"
    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)' "$log" | tail -n 40 | sed 's/^/    /'
  fi
}

t0=$SECONDS
declare -A PID_TARGET=()
failed=()
finish_one() {
  local pid rc=0
  wait -n -p pid "${!PID_TARGET[@]}" || rc=$?
  report "${PID_TARGET[$pid]}" "$rc"
  ((rc == 0)) || failed+=("${PID_TARGET[$pid]}")
  unset "PID_TARGET[$pid]"
}
for t in "${TARGETS[@]}"; do
  while ((${#PID_TARGET[@]} >= JOBS)); do finish_one; done
  run_target "$t" &
  PID_TARGET[$!]=$t
done
while ((${#PID_TARGET[@]} > 0)); do finish_one; done
echo "fuzzing: $((SECONDS - t0)) s"

if ((${#failed[@]} > 0)); then
  echo "fuzz targets that failed: ${failed[*]} (inputs in $FUZZ_DIR/artifacts/)" >&2
  exit 1
fi
