#!/usr/bin/env bash
# Runs the fuzz targets (property tests over mutated seeds from fuzz/corpus/) with many more cases
# than `cargo test` does, each target within a time bound:
#   engine/tests/fuzz.rs            FEEL parser and evaluator, BPMN parser, processor command sequences
#   gateway/tests/fuzz_requests.rs  decoding and translation of every RPC's request
# FUZZ_CASES (default 20000) cases per property, FUZZ_SECONDS (default 300) per target. A target that
# runs out of time stops without failing: the run is bounded, not exhaustive. A failure prints the
# minimal input; add it to fuzz/corpus/ once it is fixed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/waggle-target}"
cases="${FUZZ_CASES:-20000}"
seconds="${FUZZ_SECONDS:-300}"

# Build first, so that the time bound is spent fuzzing. Whole-workspace builds filtered by test target
# share test.sh's build: `-p CRATE` unifies features differently and recompiles shared dependencies.
cargo test --release --workspace --test fuzz --test fuzz_requests --no-run

for target in "waggle-engine fuzz" "waggle-gateway fuzz_requests"; do
  read -r crate test <<<"$target"
  echo "==> fuzzing $crate/$test: $cases cases per property, at most $seconds s"
  status=0
  PROPTEST_CASES="$cases" timeout --signal=INT "$seconds" \
    cargo test --release --workspace --test "$test" -- --test-threads 1 || status=$?
  if [ "$status" -eq 124 ]; then
    echo "==> $crate/$test: time bound reached without a failure"
  elif [ "$status" -ne 0 ]; then
    exit "$status"
  fi
done
