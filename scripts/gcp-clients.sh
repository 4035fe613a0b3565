#!/bin/sh
# Google's official Cloud KMS Python client (google-cloud-kms, on google-api-core and google-auth)
# and cryptography from PyPI, pinned by scripts/gcp-clients-requirements.lock, in a venv of their
# own: what tests/gcp_kms_fake.rs runs the loopback Cloud KMS fake (tests/gcp_kms/fake.py) and
# its SDK proof (tests/gcp_kms/sdk_proof.py) with. Idempotent and quiet.
#
# usage:
#   scripts/gcp-clients.sh install VENV_DIR
#       Creates VENV_DIR (python3 -m venv) and installs the lock file into it (~30 s once).
#       A marker records the lock's checksum: a finished install returns at once; a half-done
#       one or an older lock is installed again. One installer at a time per VENV_DIR.
#       Afterwards VENV_DIR/bin/python imports google.cloud.kms_v1, google.oauth2 and
#       cryptography.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
LOCK="$HERE/gcp-clients-requirements.lock"

die() {
    echo "gcp-clients.sh: $*" >&2
    exit 1
}

# shellcheck source=scripts/pinned-venv.sh
. "$HERE/pinned-venv.sh"

install_venv() {
    venv=$1
    install_pinned_venv "$venv" .keyorch-gcp-clients '"$venv/bin/python" -c "from google.cloud import kms_v1; from google.oauth2 import service_account; import cryptography" 2>/dev/null' --no-deps
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
