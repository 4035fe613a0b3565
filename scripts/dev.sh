#!/usr/bin/env bash
# Runs keyorchd on the embedded default (a private SoftHSM2 token, sled database and
# socket under a local state folder), installing what is missing first.
# Extra arguments go to keyorchd, e.g. scripts/dev.sh --state-dir /tmp/keyorch
set -euo pipefail
cd "$(dirname "$0")/.."
# rustup installs into ~/.cargo/bin, which a non-login shell may not have on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
scripts/ensure-deps.sh
exec cargo run --release --bin keyorchd -- --dev "$@"
