#!/bin/sh
# The AWS CLI (awscli v1) and boto3 from PyPI, pinned by scripts/aws-clients-requirements.lock,
# in a venv of their own: what tests/aws_endpoint.rs drives keyorchd's AWS KMS-compatible
# endpoint with. Idempotent and quiet.
#
# usage:
#   scripts/aws-clients.sh install VENV_DIR
#       Creates VENV_DIR (python3 -m venv) and installs the lock file into it (~30 s once).
#       A marker records the lock's checksum: a finished install returns at once; a half-done
#       one or an older lock is installed again. One installer at a time per VENV_DIR.
#       Afterwards VENV_DIR/bin/aws and VENV_DIR/bin/python (with boto3) are there.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
LOCK="$HERE/aws-clients-requirements.lock"

die() {
    echo "aws-clients.sh: $*" >&2
    exit 1
}

lock_sum() {
    sha256sum "$LOCK" | cut -d' ' -f1
}

install_venv() {
    venv=$1
    mkdir -p "$(dirname "$venv")"
    exec 8>"$venv.install-lock"
    flock 8
    marker="$venv/.keyorch-aws-clients"
    if [ -f "$marker" ] && [ "$(cat "$marker")" = "$(lock_sum)" ] && [ -x "$venv/bin/aws" ]; then
        exec 8>&-
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 is required (Debian: apt-get install python3 python3-venv)"
    rm -rf "$venv"
    python3 -m venv "$venv" >/dev/null 2>&1 ||
        die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    log="$venv.install.log"
    if ! "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$LOCK" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "pip install of $LOCK failed (full output: $log)"
    fi
    "$venv/bin/python" -c 'import boto3, awscli' 2>/dev/null || die "boto3 or awscli does not import after install"
    "$venv/bin/aws" --version >/dev/null 2>&1 || die "the aws command does not run after install"
    lock_sum >"$marker"
    rm -f "$log"
    exec 8>&-
}

case ${1:-} in
    install)
        [ $# -eq 2 ] || die "usage: $0 install VENV_DIR"
        install_venv "$2"
        ;;
    *)
        die "usage: $0 install VENV_DIR"
        ;;
esac
