#!/usr/bin/env bash
# Runs the compatibility suite: the real Zeebe clients (pyzeebe, zbctl, @camunda8/sdk) against
# `waggle dev` nodes that the pytest fixtures start on free ports. Called by scripts/test.sh after
# scripts/setup.sh (which installs the clients into tests/clients/node_modules and tests/clients/.venv).
# Builds the waggle binary first unless WAGGLE_BIN points at one (the whole workspace, as scripts/test.sh
# does: building one package alone unifies features differently and would recompile RocksDB); extra
# arguments go to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/waggle-target}"

if [[ -z ${WAGGLE_BIN:-} ]]; then
    (cd "$root" && cargo build --release --workspace --all-targets)
    export WAGGLE_BIN="$CARGO_TARGET_DIR/release/waggle"
fi
if [[ ! -x $WAGGLE_BIN ]]; then
    echo "run.sh: no waggle binary at $WAGGLE_BIN" >&2
    exit 1
fi
python="$here/.venv/bin/python"
if [[ ! -x $python ]]; then
    echo "run.sh: $python is missing; run scripts/setup.sh first" >&2
    exit 1
fi

cd "$root"
exec "$python" -m pytest tests/clients -q -p no:cacheprovider "$@"
