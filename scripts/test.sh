#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: installs what is missing, then
# formatting, lints, the systemd unit's sandbox rating, and every test (unit, property and
# the integration tests that run the real keyorchd on a private SoftHSM2 token). Exits
# non-zero on the first failure.
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

# systemd-analyze rates the unit's sandbox from 0 (locked down) to 10 (exposed); issue 6
# asks for at most 2.0. Skipped, with a note, where systemd-analyze is not installed.
unit_exposure() {
    local unit=systemd/keyorchd.service max=2.0 out level
    if ! command -v systemd-analyze >/dev/null 2>&1; then
        echo "systemd-analyze not found: the exposure of $unit is not checked"
        return 0
    fi
    out=$(systemd-analyze security --offline=yes "$unit" 2>&1) || {
        echo "$out"
        echo "systemd-analyze security failed on $unit" >&2
        return 1
    }
    level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    if [ -z "$level" ]; then
        echo "$out"
        echo "cannot read the exposure level of $unit" >&2
        return 1
    fi
    if awk -v l="$level" -v m="$max" 'BEGIN { exit !(l <= m) }'; then
        echo "$unit: exposure $level (at most $max)"
    else
        printf '%s\n' "$out" | grep '✗' || true
        echo "$unit: exposure $level is above $max" >&2
        return 1
    fi
}

step scripts/ensure-deps.sh
step cargo fmt --all -- --check
step cargo clippy --all-targets -- -D warnings
step unit_exposure
# Each integration test starts its own keyorchd; two at a time fit the 2-core machines.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
echo
echo "==> RUST_TEST_THREADS=$RUST_TEST_THREADS"
step cargo test --all-targets --no-fail-fast
echo
echo "==> all checks passed"
