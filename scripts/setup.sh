#!/usr/bin/env bash
# Installs what building and testing Waggle needs on a fresh machine (Debian 12 as root, with the
# Rust toolchain, Node 20 and Python 3.11 already present):
#   - protoc (protobuf-compiler) for the gRPC code generation, libclang-dev for bindgen (RocksDB);
#   - the real Zeebe clients from tests/clients/package-lock.json into tests/clients/node_modules;
#   - a Python venv at tests/clients/.venv with tests/clients/requirements.txt.
# Idempotent: every step checks first and skips what is already in place, so a second run takes
# seconds.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
clients="$root/tests/clients"

say() { printf 'setup: %s\n' "$*"; }

apt_packages() {
    local missing=() pkg
    for pkg in libclang-dev protobuf-compiler; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return
    fi
    say "installing apt packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Reinstalls the clients whenever package-lock.json differs from the one node_modules was built from.
npm_clients() {
    local lock="$clients/package-lock.json" stamp="$clients/node_modules/.waggle-lock.sha256"
    if [[ ! -f $lock ]]; then
        say "no package-lock.json: resolving and installing the npm clients"
        (cd "$clients" && npm install --no-audit --no-fund)
    else
        local want
        want="$(sha256sum "$lock" | cut -d' ' -f1)"
        if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
            return
        fi
        say "installing npm clients from package-lock.json (npm ci)"
        (cd "$clients" && npm ci --no-audit --no-fund)
    fi
    sha256sum "$lock" | cut -d' ' -f1 >"$stamp"
}

python_clients() {
    local venv="$clients/.venv" reqs="$clients/requirements.txt"
    local stamp="$venv/.waggle-requirements.sha256" want
    want="$(sha256sum "$reqs" | cut -d' ' -f1)"
    if [[ -x $venv/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    if [[ ! -x $venv/bin/python ]]; then
        say "creating Python venv at tests/clients/.venv"
        "${PYTHON:-python3}" -m venv "$venv"
    fi
    say "installing Python clients: $(grep -v '^\s*#' "$reqs" | xargs)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$reqs"
    echo "$want" >"$stamp"
}

apt_packages
npm_clients
python_clients
say "ready"
