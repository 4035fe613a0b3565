#!/bin/sh
# IBM's official Key Protect Python SDK (keyprotect, on ibm-cloud-sdk-core) and cryptography from
# PyPI, pinned by scripts/ibm-clients-requirements.lock, in a venv of their own: what
# tests/ibm_kms_fake.rs runs the loopback Key Protect / HPCS fake (tests/ibm_kms/fake.py) and
# its SDK proof (tests/ibm_kms/sdk_proof.py) with. Idempotent and quiet.
#
# usage:
#   scripts/ibm-clients.sh install VENV_DIR
#       Creates VENV_DIR (python3 -m venv) and installs the lock file into it (~20 s once).
#       A marker records the lock's checksum: a finished install returns at once; a half-done
#       one or an older lock is installed again. One installer at a time per VENV_DIR.
#       Afterwards VENV_DIR/bin/python imports keyprotect, ibm_cloud_sdk_core and cryptography.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
LOCK="$HERE/ibm-clients-requirements.lock"

die() {
    echo "ibm-clients.sh: $*" >&2
    exit 1
}

# shellcheck source=scripts/pinned-venv.sh
. "$HERE/pinned-venv.sh"

install_venv() {
    venv=$1
    install_pinned_venv "$venv" .keyorch-ibm-clients '"$venv/bin/python" -c "import keyprotect, ibm_cloud_sdk_core, jwt, cryptography" 2>/dev/null' --no-deps
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
