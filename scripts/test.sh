#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: installs what is missing, then
# formatting, lints, and every test (unit, property and the integration tests that run the
# real keyorchd on a private SoftHSM2 token). Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
# rustup installs into ~/.cargo/bin, which a non-login shell may not have on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

step() {
    echo
    echo "==> $*"
    "$@"
}

step scripts/ensure-deps.sh
step cargo fmt --all -- --check
step cargo clippy --all-targets -- -D warnings
# Each integration test starts its own keyorchd; two at a time fit the 2-core machines.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
echo
echo "==> RUST_TEST_THREADS=$RUST_TEST_THREADS"
step cargo test --all-targets --no-fail-fast
echo
echo "==> all checks passed"
