#!/usr/bin/env bash
# Installs what keyorch needs on a Debian machine, if it is missing: SoftHSM2 (the HSM the
# daemon owns), OpenSC (pkcs11-tool, used by the tests), OpenSSL (the tests verify
# signatures with it), Python 3 with venv (the tests install the LocalStack AWS KMS
# emulator, the aws CLI, boto3 and grpcio from PyPI into venvs under target/) and Node.js
# with npm (the tests install grpc-js from npm under target/). Checks that the
# Rust toolchain is there. Idempotent: when everything is present it only checks, and
# returns at once.
set -euo pipefail

MODULE=/usr/lib/softhsm/libsofthsm2.so

missing=()
if [ ! -e "$MODULE" ] || ! command -v softhsm2-util >/dev/null 2>&1; then
    missing+=(softhsm2)
fi
command -v pkcs11-tool >/dev/null 2>&1 || missing+=(opensc)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The AWS-client tests (LocalStack, the AWS endpoint's aws CLI and boto3) install pinned
# PyPI packages into venvs under target/.
if ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
# The gRPC interop tests (tests/grpc_interop.rs) install grpc-js from npm into target/.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ "${#missing[@]}" -gt 0 ]; then
    echo "ensure-deps: installing ${missing[*]}"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "ensure-deps: apt-get not found; install these by hand: ${missing[*]}" >&2
        exit 1
    fi
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "ensure-deps: not root and no sudo; install these by hand: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -e "$MODULE" ]; then
    echo "ensure-deps: $MODULE is still missing after installing softhsm2" >&2
    exit 1
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        echo "ensure-deps: cargo is in $HOME/.cargo/bin but not on PATH; run: source \"\$HOME/.cargo/env\"" >&2
    else
        echo "ensure-deps: cargo not found. Install the Rust toolchain (https://rustup.rs, Rust >= 1.88) and retry." >&2
    fi
    exit 1
fi

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "ensure-deps: systemd-analyze not found (Debian package systemd): scripts/test.sh will not rate systemd/keyorchd.service"
fi

echo "ensure-deps: softhsm2, opensc, openssl, python3, node, npm and cargo are present"
