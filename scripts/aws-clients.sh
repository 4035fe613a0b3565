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

# shellcheck source=scripts/pinned-venv.sh
. "$HERE/pinned-venv.sh"

install_venv() {
    venv=$1
    install_pinned_venv "$venv" .keyorch-aws-clients '"$venv/bin/python" -c "import boto3, awscli" 2>/dev/null && "$venv/bin/aws" --version >/dev/null 2>&1' --no-deps
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
