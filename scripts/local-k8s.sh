#!/usr/bin/env bash
# A working Kubernetes with Waggle's operator in it, on this machine, without containers:
#
#   scripts/local-k8s.sh up DIR       start it; then `source DIR/env` and `kubectl apply -f e2e/manifests/`
#   scripts/local-k8s.sh down DIR     stop everything `up` started (safe to call twice or after a failed up)
#   scripts/local-k8s.sh run DIR -- CMD [ARG...]
#                                     run CMD with the Pod network's DNS names (e.g. a Zeebe client
#                                     reaching a Gateway by its status.grpcAddress)
#   scripts/local-k8s.sh start-operator DIR | stop-operator DIR [--kill]
#                                     (re)start or stop only the operator (the integration tests use these)
#
# `up` starts, each logging to DIR/logs/:
#   1. the control plane of ../shared/kube (kube-apiserver 1.20 + controllers, CRD server 1.36, etcd)
#      with `testenv up DIR/testenv`; the CRDs from crds/ go to the CRD server and the waggle.dev group
#      is routed through kube-apiserver;
#   2. the chart's ServiceAccount and RBAC (helm template of charts/waggle), so the operator runs with
#      exactly the permissions a Helm install grants, not as admin;
#   3. kubelet-standin (operator/src/bin/kubelet-standin): binds and runs every Pod as a local process
#      with its own loopback address (LOCAL_K8S_POD_NETWORK.2-254), reported as status.podIP;
#   4. waggle-operator built from this tree, with the ServiceAccount's token.
# DIR/env exports KUBECONFIG (admin), LOCAL_K8S_DIR, LOCAL_K8S_HOSTS (the Pod network's hosts file)
# and WAGGLE_OPERATOR_METRICS.
#
# Knobs: LOCAL_K8S_PORT_BASE (16400; the testenv ports, the operator's HTTP port is base+7),
# LOCAL_K8S_POD_NETWORK (127.0.<base/100 mod 256>), LOCAL_K8S_BUILD (1: `cargo build --release
# --workspace --all-targets` first, as scripts/test.sh does; 0: use what is there), LOCAL_K8S_BIN (where the binaries are:
# $CARGO_TARGET_DIR/release), KUBE_TESTENV (path of the testenv script).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/waggle-target}"
testenv="${KUBE_TESTENV:-$root/../shared/kube/testenv}"
[[ -x "$testenv" ]] || testenv=/work/shared/kube/testenv
bin="${LOCAL_K8S_BIN:-$CARGO_TARGET_DIR/release}"
release=waggle
system_ns=waggle-system
identity=waggle-operator-local

log() { printf '[local-k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" >&2; exit 2; }

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pid() { # stop_pid FILE SECONDS: SIGTERM, then SIGKILL after SECONDS
  local file=$1 wait=$2 pid
  [[ -f "$file" ]] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $((wait * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

start_operator() {
  local dir=$1
  # shellcheck disable=SC1091
  source "$dir/env"
  bin=$LOCAL_K8S_BIN
  pid_alive "$dir/pids/operator.pid" && die "the operator already runs (pid $(cat "$dir/pids/operator.pid"))"
  KUBECONFIG="$dir/operator.kubeconfig" POD_NAMESPACE=$system_ns POD_NAME=$identity \
    WAGGLE_OPERATOR_HTTP_ADDR="127.0.0.1:$LOCAL_K8S_OPERATOR_PORT" WAGGLE_OPERATOR_LOG_FORMAT=text \
    WAGGLE_OPERATOR_LEASE_NAME="$release-operator" WAGGLE_OPERATOR_DEFAULT_IMAGE=ghcr.io/waggle-dev/waggle \
    RUST_LOG="${LOCAL_K8S_OPERATOR_LOG:-info,kube=warn}" \
    setsid "$bin/waggle-operator" >>"$dir/logs/operator.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/operator.pid"
  for _ in $(seq 300); do
    curl -fsS "$WAGGLE_OPERATOR_METRICS/readyz" >/dev/null 2>&1 && { log "operator running (pid $(cat "$dir/pids/operator.pid"))"; return 0; }
    pid_alive "$dir/pids/operator.pid" || { tail -n 20 "$dir/logs/operator.log" >&2; die "the operator exited"; }
    sleep 0.1
  done
  die "the operator did not become ready within 30 s (see $dir/logs/operator.log)"
}

up() {
  local dir=$1
  mkdir -p "$dir/logs" "$dir/pids"
  dir="$(cd "$dir" && pwd)"
  case "$dir/" in # the Pods mount these paths; the stand-in's files must stay visible to them
    /tmp/* | /etc/* | /run/* | /var/run/* | /var/lib/*) die "DIR ($dir) must not be under /tmp, /etc, /run or /var/lib, which Pods mount over; e.g. use ~/.cache/waggle-local-k8s" ;;
  esac
  local base=${LOCAL_K8S_PORT_BASE:-16400}
  local network=${LOCAL_K8S_POD_NETWORK:-127.0.$(((base / 100) % 256))}
  if [[ "${LOCAL_K8S_BUILD:-1}" == 1 ]]; then
    log "building waggle, waggle-operator and kubelet-standin (cargo build --release --workspace --all-targets)"
    # The same command as scripts/test.sh: a no-op after it, and no second set of dependencies built
    # with other features (a narrower -p would rebuild RocksDB).
    (cd "$root" && cargo build --release --quiet --workspace --all-targets)
  fi
  for b in waggle waggle-operator kubelet-standin; do [[ -x "$bin/$b" ]] || die "$bin/$b is missing (LOCAL_K8S_BUILD=1 builds it)"; done
  source "$root/scripts/tools.sh"
  install_helm

  log "starting the control plane (testenv, port base $base)"
  "$testenv" up "$dir/testenv" --port-base "$base" >"$dir/logs/testenv-up.log" 2>&1 \
    || { tail -n 20 "$dir/logs/testenv-up.log" >&2; die "testenv up failed"; }
  # shellcheck disable=SC1091
  source "$dir/testenv/env"
  cat >"$dir/env" <<EOF
$(cat "$dir/testenv/env")
export LOCAL_K8S_DIR=$dir
export LOCAL_K8S_BIN=$bin
export LOCAL_K8S_HOSTS=$dir/standin/hosts
export LOCAL_K8S_POD_NETWORK=$network
export LOCAL_K8S_OPERATOR_PORT=$((base + 7))
export WAGGLE_OPERATOR_METRICS=http://127.0.0.1:$((base + 7))
EOF

  log "installing the CRDs and routing waggle.dev through kube-apiserver"
  kubectl --kubeconfig "$TESTENV_CRD_KUBECONFIG" apply --server-side -f "$root/crds/" >/dev/null
  kubectl --kubeconfig "$TESTENV_CRD_KUBECONFIG" wait --for condition=established --timeout=60s \
    crd/clusters.waggle.dev crd/gateways.waggle.dev crd/exporters.waggle.dev >/dev/null
  "$testenv" crd-group "$dir/testenv" waggle.dev v1alpha1 >/dev/null

  log "installing the chart's ServiceAccount and RBAC"
  kubectl create namespace $system_ns >/dev/null
  "$helm" template $release "$root/charts/waggle" --namespace $system_ns \
    --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml | kubectl apply -f - >/dev/null
  local secret="" token
  for _ in $(seq 100); do
    secret=$(kubectl -n $system_ns get serviceaccount "$release-operator" -o jsonpath='{.secrets[0].name}' 2>/dev/null || true)
    [[ -n "$secret" ]] && break
    sleep 0.1
  done
  [[ -n "$secret" ]] || die "no token Secret was created for ServiceAccount $release-operator"
  token=$(kubectl -n $system_ns get secret "$secret" -o jsonpath='{.data.token}' | base64 -d)
  kubectl config view --raw --minify -o json | python3 -c '
import json, sys
config = json.load(sys.stdin)
token = sys.argv[1]
config["users"] = [{"name": "waggle-operator", "user": {"token": token}}]
config["contexts"][0]["context"]["user"] = "waggle-operator"
json.dump(config, sys.stdout)' "$token" >"$dir/operator.kubeconfig"

  log "starting kubelet-standin (Pod addresses $network.2-254)"
  setsid "$bin/kubelet-standin" --state-dir "$dir/standin" --image "waggle=$bin/waggle" --pod-network "$network" \
    >>"$dir/logs/kubelet-standin.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/kubelet-standin.pid"
  for _ in $(seq 300); do
    [[ "$(kubectl get node standin -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]] && break
    pid_alive "$dir/pids/kubelet-standin.pid" || { tail -n 20 "$dir/logs/kubelet-standin.log" >&2; die "kubelet-standin exited"; }
    sleep 0.1
  done

  log "starting waggle-operator as ServiceAccount $system_ns/$release-operator"
  start_operator "$dir"
  log "ready: source $dir/env; kubectl apply -f e2e/manifests/"
}

down() {
  local dir=$1
  [[ -d "$dir" ]] || return 0
  stop_pid "$dir/pids/operator.pid" 10
  stop_pid "$dir/pids/kubelet-standin.pid" 20
  # Pod processes die with the stand-in (PR_SET_PDEATHSIG); this catches any that did not.
  for pidfile in "$dir"/standin/pods/*/pid; do
    [[ -f "$pidfile" ]] && kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null || true
  done
  if [[ -f "$dir/testenv/testenv.conf" ]]; then "$testenv" down "$dir/testenv" >"$dir/logs/testenv-down.log" 2>&1 || true; fi
  log "stopped everything under $dir"
}

cmd=${1:-}; dir=${2:-}
[[ -n "$cmd" && -n "$dir" ]] || usage
case "$cmd" in
  up) trap 'status=$?; if [[ $status -ne 0 ]]; then log "up failed; stopping what it started"; down "$dir"; fi' EXIT; up "$dir" ;;
  down) down "$dir" ;;
  start-operator) start_operator "$(cd "$dir" && pwd)" ;;
  stop-operator)
    if [[ "${3:-}" == --kill ]] && pid_alive "$dir/pids/operator.pid"; then kill -KILL "$(cat "$dir/pids/operator.pid")"; fi
    stop_pid "$dir/pids/operator.pid" 10
    ;;
  run)
    [[ "${3:-}" == -- ]] || usage
    shift 3
    # exec all the way down (unshare and sh exec too), so the command keeps this script's pid and
    # whoever started `run` can stop the command by stopping it.
    if [[ $(id -u) -eq 0 ]]; then userns=(); else userns=(--map-root-user); fi
    exec unshare "${userns[@]}" --mount --propagation private \
      /bin/sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$dir/standin/hosts" "$@"
    ;;
  *) usage ;;
esac
