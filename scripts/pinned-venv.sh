# Sourced by scripts/localstack.sh and scripts/aws-clients.sh: installs a pinned lock file
# into a Python venv of its own, once. Expects `die` and `LOCK` from the sourcing script.
#
# install_pinned_venv VENV_DIR MARKER_NAME CHECK [PIP_ARGS...]
#   Creates VENV_DIR (python3 -m venv) and pip-installs LOCK into it. A marker file
#   (VENV_DIR/MARKER_NAME) records the lock's checksum: a finished install returns at once;
#   a half-done one or an older lock is installed again. One installer at a time per venv
#   (parallel test binaries, a developer's shell). CHECK is a shell command run afterwards
#   that must succeed (e.g. an import).

lock_sum() {
    sha256sum "$LOCK" | cut -d' ' -f1
}

install_pinned_venv() {
    venv=$1
    marker="$venv/$2"
    check=$3
    shift 3
    mkdir -p "$(dirname "$venv")"
    exec 8>"$venv.install-lock"
    flock 8
    if [ -f "$marker" ] && [ "$(cat "$marker")" = "$(lock_sum)" ] && [ -x "$venv/bin/python" ]; then
        exec 8>&-
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 is required (Debian: apt-get install python3 python3-venv)"
    rm -rf "$venv"
    python3 -m venv "$venv" >/dev/null 2>&1 ||
        die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    log="$venv.install.log"
    if ! "$venv/bin/pip" install -q --disable-pip-version-check "$@" -r "$LOCK" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "pip install of $LOCK failed (full output: $log)"
    fi
    eval "$check" || die "the install of $LOCK does not work: $check failed"
    lock_sum >"$marker"
    rm -f "$log"
    exec 8>&-
}
