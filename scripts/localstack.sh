#!/bin/sh
# LocalStack 4.10.0's KMS (a real AWS KMS emulator) on loopback, without Docker: install it into
# a venv, start it in the background on a port, stop it. Idempotent and quiet.
#
# usage:
#   scripts/localstack.sh install VENV_DIR
#       Creates VENV_DIR (python3 -m venv) and installs scripts/localstack-requirements.lock
#       into it (~1-2 min once). A marker records the lock's checksum: a finished install
#       returns at once; a half-done one or an older lock is installed again.
#   scripts/localstack.sh start VENV_DIR STATE_DIR PORT
#       Installs if needed, starts LocalStack (KMS only) on 127.0.0.1:PORT in its own process
#       group, writing only under STATE_DIR (pid in STATE_DIR/localstack.pid, output in
#       STATE_DIR/localstack.log), and waits (at most LOCALSTACK_START_TIMEOUT s, default 90)
#       until /_localstack/health reports "kms": "running". Already running there: returns.
#   scripts/localstack.sh stop STATE_DIR
#       Stops the instance recorded in STATE_DIR (SIGTERM to its process group, SIGKILL after
#       10 s). Nothing running: returns.
#
# It speaks AWS KMS JSON 1.1 with any SigV4 credentials; GetParametersForImport and
# ImportKeyMaterial unwrap RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256 and RSA_AES_KEY_WRAP_SHA_256
# (not _SHA_1) and the imported material is really used. Not emulated: custom key stores.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
LOCK="$HERE/localstack-requirements.lock"

die() {
    echo "localstack.sh: $*" >&2
    exit 1
}

# shellcheck source=scripts/pinned-venv.sh
. "$HERE/pinned-venv.sh"

install_venv() {
    venv=$1
    install_pinned_venv "$venv" .keyorch-localstack '"$venv/bin/python" -c "import localstack" 2>/dev/null'
}

healthy() {
    curl -sf --max-time 2 "http://127.0.0.1:$1/_localstack/health" 2>/dev/null |
        grep -q '"kms": *"running"'
}

# The pid recorded in STATE_DIR, if that process is alive and still LocalStack (not a
# recycled pid).
running_pid() {
    pidfile="$1/localstack.pid"
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    if [ -r "/proc/$pid/cmdline" ]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'localstack.runtime.main' || return 1
    fi
    echo "$pid"
}

start() {
    venv=$1 state=$2 port=$3
    case $port in
        '' | *[!0-9]*) die "PORT must be a number, not '$port'" ;;
    esac
    install_venv "$venv"
    mkdir -p "$state/fs" "$state/cache"
    state=$(cd "$state" && pwd)
    if running_pid "$state" >/dev/null; then
        healthy "$port" && return 0
        die "an instance recorded in $state is running but not healthy on port $port"
    fi
    healthy "$port" && die "port $port already serves another LocalStack"
    # OVERRIDE_IN_DOCKER=0 keeps it off /var/lib/localstack on hosts that look like
    # containers; hypercorn honours the loopback address (the default server binds 0.0.0.0).
    SERVICES=kms EAGER_SERVICE_LOADING=1 \
        GATEWAY_SERVER=hypercorn GATEWAY_LISTEN="127.0.0.1:$port" \
        DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 DNS_ADDRESS=0 \
        OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$state/fs" XDG_CACHE_HOME="$state/cache" \
        PERSISTENCE=0 \
        setsid "$venv/bin/python" -m localstack.runtime.main \
        >"$state/localstack.log" 2>&1 </dev/null &
    echo $! >"$state/localstack.pid"
    deadline=$(($(date +%s) + ${LOCALSTACK_START_TIMEOUT:-90}))
    while ! healthy "$port"; do
        if ! running_pid "$state" >/dev/null; then
            tail -n 20 "$state/localstack.log" >&2
            die "LocalStack exited during start (log: $state/localstack.log)"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            stop "$state"
            die "LocalStack KMS not running on port $port after ${LOCALSTACK_START_TIMEOUT:-90} s"
        fi
        sleep 0.2
    done
}

stop() {
    state=$1
    pid=$(running_pid "$state") || {
        rm -f "$state/localstack.pid"
        return 0
    }
    # setsid made the pid its process group's id: end the group, nothing else.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$state/localstack.pid"
}

cmd=${1:-}
case $cmd in
    install)
        [ $# -eq 2 ] || die "usage: $0 install VENV_DIR"
        install_venv "$2"
        ;;
    start)
        [ $# -eq 4 ] || die "usage: $0 start VENV_DIR STATE_DIR PORT"
        start "$2" "$3" "$4"
        ;;
    stop)
        [ $# -eq 2 ] || die "usage: $0 stop STATE_DIR"
        stop "$2"
        ;;
    *)
        die "usage: $0 install VENV_DIR | start VENV_DIR STATE_DIR PORT | stop STATE_DIR"
        ;;
esac
