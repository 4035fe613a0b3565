#!/bin/sh
# Two gRPC clients nobody here wrote, pinned: Python grpcio from PyPI (with grpcio-reflection,
# grpcio-health-checking and grpcio-status; scripts/grpc-clients-requirements.lock) in a venv
# of its own, and grpc-js with @grpc/proto-loader from npm (tests/grpc_interop/js/package.json
# and package-lock.json). What tests/grpc_interop.rs drives keyorchd's Unix socket and
# mutual-TLS listener with. Idempotent and quiet.
#
# usage:
#   scripts/grpc-clients.sh install DIR
#       Creates DIR/venv (python3 -m venv; the lock file, --no-deps) and DIR/js (the two npm
#       files copied there, then `npm ci`): ~30 s once. Each part has a marker recording the
#       checksum of what it was installed from: a finished install returns at once; a
#       half-done one or an older lock is installed again. One installer at a time per part.
#       Afterwards DIR/venv/bin/python imports grpc, grpc_reflection, grpc_health and
#       grpc_status, and DIR/js/node_modules holds @grpc/grpc-js and @grpc/proto-loader
#       (run the JavaScript client with NODE_PATH=DIR/js/node_modules).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
LOCK="$HERE/grpc-clients-requirements.lock"
JS_SRC="$HERE/../tests/grpc_interop/js"

die() {
    echo "grpc-clients.sh: $*" >&2
    exit 1
}

# shellcheck source=scripts/pinned-venv.sh
. "$HERE/pinned-venv.sh"

install_venv() {
    venv=$1
    install_pinned_venv "$venv" .keyorch-grpc-clients '"$venv/bin/python" -c "import grpc, grpc_reflection.v1alpha.proto_reflection_descriptor_database, grpc_health.v1.health_pb2, grpc_status.rpc_status" 2>/dev/null' --no-deps
}

js_sum() {
    cat "$JS_SRC/package.json" "$JS_SRC/package-lock.json" | sha256sum | cut -d' ' -f1
}

install_js() {
    js=$1
    marker="$js/.keyorch-grpc-clients"
    mkdir -p "$(dirname "$js")"
    exec 9>"$js.install-lock"
    flock 9
    if [ -f "$marker" ] && [ "$(cat "$marker")" = "$(js_sum)" ] && [ -d "$js/node_modules" ]; then
        exec 9>&-
        return 0
    fi
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
        die "node and npm are required (Debian: apt-get install nodejs npm)"
    rm -rf "$js"
    mkdir -p "$js"
    cp "$JS_SRC/package.json" "$JS_SRC/package-lock.json" "$js/"
    log="$js.install.log"
    # No install scripts: none of these packages needs one (protobufjs's only checks versions).
    if ! (cd "$js" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "npm ci of $JS_SRC/package-lock.json failed (full output: $log)"
    fi
    (cd "$js" && node -e 'require("@grpc/grpc-js"); require("@grpc/proto-loader")') ||
        die "the npm install in $js does not work: cannot require @grpc/grpc-js and @grpc/proto-loader"
    js_sum >"$marker"
    rm -f "$log"
    exec 9>&-
}

case ${1:-} in
    install)
        [ $# -eq 2 ] || die "usage: $0 install DIR"
        install_venv "$2/venv"
        install_js "$2/js"
        ;;
    *)
        die "usage: $0 install DIR"
        ;;
esac
