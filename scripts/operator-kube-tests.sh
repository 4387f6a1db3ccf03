#!/usr/bin/env bash
# The operator's integration suite (operator/tests/kube.rs) against a real Kubernetes control plane:
# starts scripts/local-k8s.sh (control plane of ../shared/kube, kubelet-standin, the operator built
# from this tree with the chart's RBAC), runs the suite, and stops everything it started, also when
# a test fails or the script is interrupted. On failure it prints the last lines of the operator's and
# the stand-in's logs. The environment lives in ${WAGGLE_KUBE_TESTS_DIR:-~/.cache/waggle-kube-tests}
# and listens from port ${LOCAL_K8S_PORT_BASE:-16400} up (set it when another environment uses those).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/waggle-target}"
dir="${WAGGLE_KUBE_TESTS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/waggle-kube-tests}"

finish() {
  local status=$?
  if [[ $status -ne 0 && -d "$dir/logs" ]]; then
    for log in operator kubelet-standin; do
      echo "----- last lines of $dir/logs/$log.log" >&2
      tail -n 40 "$dir/logs/$log.log" >&2 || true
    done
  fi
  scripts/local-k8s.sh down "$dir" || true
  exit $status
}
trap finish EXIT
trap 'exit 130' INT TERM

scripts/local-k8s.sh down "$dir" >/dev/null 2>&1 || true
rm -rf "$dir"
scripts/local-k8s.sh up "$dir"
# shellcheck disable=SC1091
source "$dir/env"
started=$(date +%s)
# --workspace, like scripts/test.sh, so cargo unifies features the same way and reuses its build
# (a narrower -p would rebuild dependencies, RocksDB among them, with other features).
cargo test --release --workspace --test kube -- --ignored --test-threads 4
echo "operator integration suite: $(($(date +%s) - started)) s"
