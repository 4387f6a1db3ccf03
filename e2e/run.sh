#!/usr/bin/env bash
# End-to-end test of the operator on a real Kubernetes cluster (kind by default, or k3d).
# See e2e/README.md. Not part of `cargo test`: it needs docker and a cluster.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
provider="${E2E_PROVIDER:-kind}"            # kind | k3d
name="${E2E_CLUSTER_NAME:-waggle-e2e}"
namespace="${E2E_NAMESPACE:-waggle-e2e}"
keep="${E2E_KEEP:-0}"                        # 1: leave the cluster running afterwards
reuse="${E2E_REUSE_CLUSTER:-0}"              # 1: use the current kubectl context, create nothing
timeout="${E2E_TIMEOUT:-600s}"
tools="$root/e2e/.tools"
pids=()

log() { printf '\n[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
need() { command -v "$1" >/dev/null || { echo "e2e: '$1' is required (see e2e/README.md)" >&2; exit 2; }; }

cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ $status -ne 0 ]]; then
    log "FAILED; state for diagnosis:"
    kubectl get waggle,statefulsets,deployments,pods,pvc -n "$namespace" -o wide || true
    kubectl describe clusters.waggle.dev,gateways.waggle.dev -n "$namespace" || true
    kubectl logs -n waggle-system deployment/waggle-operator --tail=100 || true
  fi
  if [[ "$keep" != 1 ]]; then
    log "tearing down"
    kubectl delete namespace "$namespace" --ignore-not-found --wait=false || true
    helm uninstall waggle -n waggle-system --ignore-not-found || true
    if [[ "$reuse" != 1 ]]; then
      case "$provider" in
        kind) kind delete cluster --name "$name" || true ;;
        k3d) k3d cluster delete "$name" || true ;;
      esac
    fi
  fi
  exit $status
}
trap cleanup EXIT

need docker; need kubectl; need helm; need npm; need curl
[[ "$reuse" == 1 ]] || need "$provider"

if [[ "$reuse" != 1 ]]; then
  log "creating $provider cluster $name"
  case "$provider" in
    kind) kind create cluster --name "$name" --wait 120s ;;
    k3d) k3d cluster create "$name" --wait ;;
    *) echo "E2E_PROVIDER must be kind or k3d" >&2; exit 2 ;;
  esac
fi

log "building images waggle:e2e and waggle-operator:e2e"
docker build -f docker/waggle.Dockerfile -t waggle:e2e .
docker build -f docker/operator.Dockerfile -t waggle-operator:e2e .
if [[ "$reuse" != 1 ]]; then
  log "loading images into the cluster"
  case "$provider" in
    kind) kind load docker-image waggle:e2e waggle-operator:e2e --name "$name" ;;
    k3d) k3d image import waggle:e2e waggle-operator:e2e --cluster "$name" ;;
  esac
fi

log "installing the chart"
helm upgrade --install waggle charts/waggle -n waggle-system --create-namespace --wait --timeout "$timeout" \
  --set image.repository=waggle-operator --set image.tag=e2e --set image.pullPolicy=Never \
  --set waggleImage.repository=waggle --set logFormat=text
kubectl get crd clusters.waggle.dev gateways.waggle.dev exporters.waggle.dev

log "checking that the API server enforces the CRD rules"
kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f -
if kubectl apply -n "$namespace" --dry-run=server -f - <<'YAML' 2>/dev/null; then
apiVersion: waggle.dev/v1alpha1
kind: Cluster
metadata: {name: bad}
spec: {brokers: 1, partitions: 1, replicationFactor: 3, version: e2e, storage: {size: 1Gi}}
YAML
  echo "e2e: a Cluster with replicationFactor > brokers was accepted" >&2; exit 1
fi

log "applying a Gateway before its Cluster: it must report ClusterNotFound, then recover"
kubectl apply -n "$namespace" -f e2e/manifests/gateway.yaml
kubectl wait -n "$namespace" gateway/e2e-gateway --for=jsonpath='{.status.conditions[?(@.type=="Degraded")].reason}'=ClusterNotFound --timeout=60s
kubectl apply -n "$namespace" -f e2e/manifests/cluster.yaml

log "waiting for the Cluster and the Gateway to become Ready"
kubectl wait -n "$namespace" cluster/e2e --for=condition=Ready --timeout="$timeout"
kubectl wait -n "$namespace" gateway/e2e-gateway --for=condition=Ready --timeout="$timeout"
kubectl get waggle -n "$namespace"
ready="$(kubectl get -n "$namespace" cluster/e2e -o jsonpath='{.status.readyBrokers}')"
[[ "$ready" == 3 ]] || { echo "e2e: expected 3 ready brokers, status says $ready" >&2; exit 1; }
[[ "$(kubectl get -n "$namespace" statefulset/e2e-broker -o jsonpath='{.spec.updateStrategy.type}')" == OnDelete ]]

log "checking broker health and metrics on the management port"
kubectl port-forward -n "$namespace" pod/e2e-broker-0 19600:9600 >/dev/null 2>&1 & pids+=($!)
kubectl port-forward -n "$namespace" svc/e2e-gateway 26500:26500 >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 30); do curl -fsS http://127.0.0.1:19600/health/ready >/dev/null 2>&1 && break; sleep 1; done
curl -fsS http://127.0.0.1:19600/health/ready
curl -fsS http://127.0.0.1:19600/metrics | head -n 5

log "running a workload through the gateway with zbctl"
if [[ ! -x "$tools/node_modules/zbctl/bin/zbctl-cli.linux" ]]; then
  mkdir -p "$tools" && npm install --prefix "$tools" --no-save --silent zbctl@8.4
fi
zbctl() { "$tools/node_modules/zbctl/bin/zbctl-cli.linux" --insecure --address 127.0.0.1:26500 "$@"; }
for _ in $(seq 30); do zbctl status >/dev/null 2>&1 && break; sleep 1; done
zbctl status | tee "$tools/status.txt"
[[ "$(grep -c 'Broker ' "$tools/status.txt")" -ge 3 ]] || { echo "e2e: topology lacks 3 brokers" >&2; exit 1; }
zbctl deploy resource e2e/manifests/order.bpmn
zbctl create worker e2e-charge --handler 'echo {"charged":true}' >/dev/null 2>&1 & pids+=($!)
result="$(zbctl create instance e2e-order --withResult --variables '{"amount": 42}')"
echo "$result"
grep -q '"charged": *true' <<<"$result" || { echo "e2e: the instance did not complete through the worker" >&2; exit 1; }

log "checking the operator's metrics"
kubectl port-forward -n waggle-system svc/waggle-operator-metrics 18080:8080 >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 30); do curl -fsS http://127.0.0.1:18080/metrics >/dev/null 2>&1 && break; sleep 1; done
curl -fsS http://127.0.0.1:18080/metrics | grep '^waggle_operator_reconciles_total'

log "deleting the Cluster: garbage collection removes its StatefulSet, Services, ConfigMap and PDB"
kubectl delete -n "$namespace" cluster/e2e --wait=true --timeout=120s
kubectl wait -n "$namespace" --for=delete statefulset/e2e-broker configmap/e2e-broker-config service/e2e-broker \
  poddisruptionbudget/e2e-broker --timeout=120s

log "PASSED"
