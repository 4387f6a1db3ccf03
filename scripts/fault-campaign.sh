#!/usr/bin/env bash
# Runs the seeded fault campaign (cli/tests/fault_campaign.rs) against a three-broker cluster of real
# `waggle` processes under load: each round draws a fault (kill -9 of a broker, SIGSTOP, isolation
# through the fault proxy, kill -9 of the gateway, two brokers down, a full disk on one broker) and a
# target from a PRNG, holds it 1 to 5 s, heals it and measures the time to recover; the run ends with
# the ledger check of the failover tests and a per-fault table.
#   scripts/fault-campaign.sh                       3 rounds, seed from the clock (printed first)
#   scripts/fault-campaign.sh --rounds 100          a long campaign
#   scripts/fault-campaign.sh --seed 1234 --rounds 10   replays a campaign: same faults, same targets
# The same seed draws the same faults; targets chosen by role (leader or follower of a partition)
# follow the roles the round observes. `cargo test` runs the short default as part of the workspace.
# Builds and selects with --workspace (release, shared target directory), as scripts/test.sh does, so
# that no narrower selection (-p waggle) changes feature unification and recompiles RocksDB.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/waggle-target}"

usage() { echo "usage: $0 [--seed N] [--rounds N]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) [ $# -ge 2 ] || usage; export WAGGLE_FAULT_SEED="$2"; shift 2 ;;
    --rounds) [ $# -ge 2 ] || usage; export WAGGLE_FAULT_ROUNDS="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done

cargo build --release --workspace --all-targets
cargo test --release --workspace --test fault_campaign -- seeded_fault_rounds_lose_no_acknowledged_work --exact --nocapture
