#!/bin/sh
# Microsoft's official Azure SDK for Python (azure-keyvault-keys and azure-identity, on
# azure-core and MSAL) and cryptography from PyPI, pinned by
# scripts/azure-clients-requirements.lock, in a venv of their own: what tests/azure_kv_fake.rs
# runs the loopback Azure Key Vault / Microsoft Entra ID fake (tests/azure_kv/fake.py) and its
# SDK proof (tests/azure_kv/sdk_proof.py) with. Idempotent and quiet.
#
# usage:
#   scripts/azure-clients.sh install VENV_DIR
#       Creates VENV_DIR (python3 -m venv) and installs the lock file into it (~20 s once).
#       A marker records the lock's checksum: a finished install returns at once; a half-done
#       one or an older lock is installed again. One installer at a time per VENV_DIR.
#       Afterwards VENV_DIR/bin/python imports azure.keyvault.keys, azure.identity, msal and
#       cryptography.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
LOCK="$HERE/azure-clients-requirements.lock"

die() {
    echo "azure-clients.sh: $*" >&2
    exit 1
}

# shellcheck source=scripts/pinned-venv.sh
. "$HERE/pinned-venv.sh"

install_venv() {
    venv=$1
    install_pinned_venv "$venv" .keyorch-azure-clients '"$venv/bin/python" -c "import azure.keyvault.keys, azure.identity, msal, jwt, cryptography" 2>/dev/null' --no-deps
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
