#!/usr/bin/env bash
# Benchmarks a 3-broker cluster (3 partitions, replication factor 3) with a standalone gateway, all on
# this machine, with `waggle bench`.
#
#   benches/cluster.sh [-- BENCH_ARGS...]
#
# Builds the release binary, starts the brokers and the gateway as README.md's "Run a cluster on one
# machine" does, on fresh data directories on the same disk as this checkout, waits until every broker
# is ready and the gateway sees a leader for each partition, runs `waggle bench` with BENCH_ARGS
# (default: --in-flight 32,128 --duration 20) charging the CPU, records and fsyncs of all four
# processes to the run, and stops everything it started.
#
# Every committed entry is applied on three brokers and every batch is fsynced on three disks' worth
# of logs (the same disk here), so on one 2-core machine this measures replication's cost, not what
# three machines would do.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/waggle-target}"
[[ ${1:-} == -- ]] && shift
bench_args=("$@")
((${#bench_args[@]})) || bench_args=(--in-flight 32,128 --duration 20)

(cd "$root" && cargo build --release --workspace --all-targets --quiet)
waggle="$CARGO_TARGET_DIR/release/waggle"
work="$(mktemp -d "$root/.bench-XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=benches/ports.sh
source "$root/benches/ports.sh"
wait_for_free_ports 26500 9700 26601 26602 9600 26611 26612 9610 26621 26622 9620

peers=127.0.0.1:26602,127.0.0.1:26612,127.0.0.1:26622
for n in 0 1 2; do
    "$waggle" broker --node-id "$n" --cluster-size 3 --partitions 3 --replication-factor 3 --peers "$peers" \
        --data-dir "$work/broker-$n" --internal-addr "127.0.0.1:266${n}2" \
        --command-addr "127.0.0.1:266${n}1" --management-addr "127.0.0.1:96${n}0" >"$work/broker-$n.log" 2>&1 &
    pids+=($!)
done
"$waggle" gateway --brokers 127.0.0.1:26601,127.0.0.1:26611,127.0.0.1:26621 \
    --grpc-addr 127.0.0.1:26500 --management-addr 127.0.0.1:9700 >"$work/gateway.log" 2>&1 &
pids+=($!)

ready() {
    for n in 0 1 2; do
        curl -fsS "http://127.0.0.1:96${n}0/health/ready" >/dev/null 2>&1 || return 1
    done
    curl -fsS http://127.0.0.1:9700/health/ready >/dev/null 2>&1
}
for _ in $(seq 1 150); do ready && break; sleep 0.2; done
if ! ready; then
    tail -n 20 "$work"/*.log >&2
    exit 1
fi

"$waggle" bench --probe-dir "$work" \
    --management 127.0.0.1:9600,127.0.0.1:9610,127.0.0.1:9620,127.0.0.1:9700 "${bench_args[@]}"
