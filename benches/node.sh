#!/usr/bin/env bash
# Benchmarks (and optionally profiles) one `waggle dev` node with `waggle bench` on this machine.
#
#   benches/node.sh [--profile OUT_DIR] [-- BENCH_ARGS...]
#
# Builds the release binary, starts `waggle dev` on a fresh data directory (on the same disk as this
# checkout, which is where the fsync probe runs too), waits until it is ready, runs `waggle bench`
# with BENCH_ARGS (default: --in-flight 32,128 --duration 20), and stops the node.
# With --profile, the node runs under `perf record` (software cpu-clock events, DWARF call graphs)
# during the whole bench; OUT_DIR receives perf.data, the top functions by inclusive and by self cost
# (children.txt, self.txt) and, when inferno is installed (`cargo install inferno`), flamegraph.svg.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/waggle-target}"
profile=""
if [[ ${1:-} == --profile ]]; then
    profile="$(mkdir -p "$2" && cd "$2" && pwd)"
    shift 2
fi
[[ ${1:-} == -- ]] && shift
bench_args=("$@")
((${#bench_args[@]})) || bench_args=(--in-flight 32,128 --duration 20)

(cd "$root" && cargo build --release --workspace --all-targets --quiet)
waggle="$CARGO_TARGET_DIR/release/waggle"
work="$(mktemp -d "$root/.bench-XXXXXX")"
node_pid=""
cleanup() {
    if [[ -n $node_pid ]]; then
        kill -INT "$node_pid" 2>/dev/null || true
        wait "$node_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

ports=(--grpc-addr 127.0.0.1:26500 --command-addr 127.0.0.1:26501 --management-addr 127.0.0.1:9600)
# shellcheck source=benches/ports.sh
source "$root/benches/ports.sh"
wait_for_free_ports 26500 26501 9600
if [[ -n $profile ]]; then
    perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -o "$profile/perf.data" -- \
        "$waggle" dev --data-dir "$work/data" "${ports[@]}" >"$work/node.log" 2>&1 &
else
    "$waggle" dev --data-dir "$work/data" "${ports[@]}" >"$work/node.log" 2>&1 &
fi
node_pid=$!
for _ in $(seq 1 100); do
    if curl -fsS http://127.0.0.1:9600/health/ready >/dev/null 2>&1; then break; fi
    sleep 0.2
done
curl -fsS http://127.0.0.1:9600/health/ready >/dev/null || { cat "$work/node.log" >&2; exit 1; }

"$waggle" bench --probe-dir "$work" "${bench_args[@]}"

if [[ -n $profile ]]; then
    kill -INT "$node_pid"
    wait "$node_pid" || true
    node_pid=""
    perf report -i "$profile/perf.data" --children --stdio --percent-limit 2 -g none --sort symbol \
        >"$profile/children.txt" 2>/dev/null
    perf report -i "$profile/perf.data" --no-children --stdio --percent-limit 0.5 -g none --sort symbol \
        >"$profile/self.txt" 2>/dev/null
    if command -v inferno-collapse-perf >/dev/null; then
        perf script -i "$profile/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph \
            >"$profile/flamegraph.svg"
    fi
    echo "profile written to $profile"
fi
