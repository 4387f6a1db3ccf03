#!/usr/bin/env bash
# Runs every test of the project: the one command README.md names and .ci/run calls.
#   1. scripts/setup.sh: system packages and the real Zeebe clients (quick when already installed);
#   2. formatting, and clippy with warnings as errors;
#   3. the Rust workspace: unit, conformance and integration tests (RocksDB on disk, gRPC on loopback);
#   4. the operator's static checks (CRD drift, helm lint/template, offline schema validation), then
#      its integration suite against a real Kubernetes control plane (scripts/operator-kube-tests.sh:
#      CRDs and CEL rules on the real API server, the operator binary with the chart's RBAC, real
#      broker and gateway processes run by kubelet-standin, a Zeebe client through the Gateway);
#   5. the real Zeebe clients (pyzeebe, zbctl, @camunda8/sdk) against a `waggle dev` node.
# A cargo target directory outside the clone is reused when there is one ($CARGO_TARGET_DIR, else
# ~/.cache/waggle-target), so repeated runs and CI do not rebuild RocksDB from scratch.
# Everything builds and runs in the release profile only: RocksDB's C++ takes about 40 minutes of both
# cores to compile per profile on a 2-core machine, so a second (debug) profile would double a cold
# build. Release tests also run the code as users run it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/waggle-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "setup"
scripts/setup.sh

step "formatting"
cargo fmt --all -- --check

step "build"
cargo build --release --workspace --all-targets

step "lints"
cargo clippy --release --workspace --all-targets -- -D warnings

step "rust tests"
cargo test --release --workspace --no-fail-fast

step "operator checks"
scripts/operator-checks.sh

step "operator against a real Kubernetes control plane"
scripts/operator-kube-tests.sh

step "real Zeebe clients against waggle dev"
tests/clients/run.sh
