#!/usr/bin/env bash
# scripts/toxiproxy.sh — install and run Toxiproxy (Shopify's TCP proxy for
# injecting network faults) for `hektor-bench faults` and its tests.
#
# Owns: everything under .toxiproxy/ in the repo root (the binaries in
# .toxiproxy/bin, a Go build cache, one pid file and log per API port).
# Does not own: the proxies a server holds (the bench creates and deletes
# its own through the HTTP API), or any other toxiproxy-server.
#
# Usage: scripts/toxiproxy.sh install|install-cli|start|stop|status|env [PORT]
#   install  `go install` toxiproxy-server into .toxiproxy/bin unless it is
#            there already; prints the path of the server binary (the last
#            line of stdout: `hektor-bench faults` runs it on a port of its own).
#   install-cli  the same for toxiproxy-cli (handy by hand; nothing needs it).
#   start    install if needed, then start a server with its HTTP API on
#            127.0.0.1:PORT (default 8474) in the background, and wait until
#            the API answers; prints HEKTOR_TOXIPROXY=http://127.0.0.1:PORT.
#            Does nothing if our server on that port already answers.
#   stop     stop our server on PORT (TERM, then KILL after 10 s).
#   status   exit 0 if our server on PORT answers, 1 otherwise.
#   env      print `export HEKTOR_TOXIPROXY=http://127.0.0.1:PORT` and
#            `export HEKTOR_TOXIPROXY_SERVER=<the server binary>`.
#
# Environment:
#   HEKTOR_TOXIPROXY_VERSION  the module version to install (default v2.12.0)
#   HEKTOR_TOXIPROXY_HOME     the directory it owns (default .toxiproxy)
#   GO                        the go binary (default: go on PATH, else
#                             /usr/local/go/bin/go)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
HOME_DIR="${HEKTOR_TOXIPROXY_HOME:-$REPO_ROOT/.toxiproxy}"
BIN_DIR="$HOME_DIR/bin"
VERSION="${HEKTOR_TOXIPROXY_VERSION:-v2.12.0}"
MODULE=github.com/Shopify/toxiproxy/v2
HOST=127.0.0.1
PORT="${2:-8474}"
SERVER="$BIN_DIR/toxiproxy-server"
CLI="$BIN_DIR/toxiproxy-cli"
PID_FILE="$HOME_DIR/server-$PORT.pid"
LOG_FILE="$HOME_DIR/server-$PORT.log"

log() { printf 'toxiproxy.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ "$PORT" =~ ^[0-9]+$ ]] || die "the API port must be a number, not '$PORT'"

find_go() {
    if [[ -n "${GO:-}" ]]; then
        echo "$GO"
    elif command -v go >/dev/null 2>&1; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        echo /usr/local/go/bin/go
    else
        return 1
    fi
}

# go install one command of the module (server or cli) into $BIN_DIR as
# toxiproxy-$1, unless it is there.
go_install() {
    local what="toxiproxy-$1"
    [[ -x "$BIN_DIR/$what" ]] && return 0
    local go
    go="$(find_go)" || die "go not found (put it on PATH or set GO); it builds $what"
    mkdir -p "$BIN_DIR"
    log "installing $what $VERSION into $BIN_DIR with $go (first run only)"
    if ! GOBIN="$BIN_DIR" GOFLAGS=-mod=mod GOCACHE="$HOME_DIR/gocache" \
        "$go" install "$MODULE/cmd/$1@$VERSION" >"$HOME_DIR/install.log" 2>&1; then
        tail -n 30 "$HOME_DIR/install.log" >&2 || true
        die "go install $MODULE/cmd/$1@$VERSION failed (log: $HOME_DIR/install.log)"
    fi
    # The commands are the module's cmd/server and cmd/cli: go install names them so.
    if [[ -x "$BIN_DIR/$1" ]]; then
        mv -f "$BIN_DIR/$1" "$BIN_DIR/$what"
    fi
    [[ -x "$BIN_DIR/$what" ]] || die "go install finished but $BIN_DIR/$what is missing"
    rm -rf "$HOME_DIR/gocache"
    log "installed $what ($("$BIN_DIR/$what" -version 2>&1 | head -n1)) at $BIN_DIR/$what"
}

cmd_install() {
    go_install server
    echo "$SERVER"
}

# The pid from the pid file if that process is alive and is our server on PORT.
running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid cmdline
    pid="$(tr -cd '0-9' <"$PID_FILE")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    if [[ "$cmdline" == *"$SERVER"*"-port $PORT"* ]]; then
        echo "$pid"
        return 0
    fi
    return 1
}

api_answers() {
    local answer
    answer="$(curl -fsS --max-time 2 "http://$HOST:$PORT/version" 2>/dev/null)" || return 1
    [[ -n "$answer" ]]
}

cmd_start() {
    local pid
    if pid="$(running_pid)" && api_answers; then
        log "toxiproxy-server already running (pid $pid), API on http://$HOST:$PORT"
        echo "HEKTOR_TOXIPROXY=http://$HOST:$PORT"
        return 0
    fi
    command -v curl >/dev/null 2>&1 || die "curl not found; it probes the server's API"
    if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
        die "port $PORT on $HOST is already in use by another process; choose another API port"
    fi
    cmd_install >/dev/null
    mkdir -p "$HOME_DIR"
    # setsid: the server outlives the shell that started it.
    setsid "$SERVER" -host "$HOST" -port "$PORT" >>"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"
    local deadline=$((SECONDS + 20))
    until api_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            tail -n 20 "$LOG_FILE" >&2 || true
            die "toxiproxy-server exited during start-up (log: $LOG_FILE)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$LOG_FILE" >&2 || true
            cmd_stop || true
            die "toxiproxy-server did not answer on http://$HOST:$PORT within 20 s"
        fi
        sleep 0.2
    done
    log "toxiproxy-server is up (pid $pid), API on http://$HOST:$PORT (log: $LOG_FILE)"
    echo "HEKTOR_TOXIPROXY=http://$HOST:$PORT"
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        log "toxiproxy-server on port $PORT not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$PID_FILE"
    log "toxiproxy-server on port $PORT stopped"
}

cmd_status() {
    local pid
    if pid="$(running_pid)" && api_answers; then
        log "toxiproxy-server running (pid $pid), API on http://$HOST:$PORT"
        return 0
    fi
    log "toxiproxy-server on port $PORT not running"
    return 1
}

case "${1:-}" in
install) cmd_install ;;
install-cli)
    go_install cli
    echo "$CLI"
    ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env)
    echo "export HEKTOR_TOXIPROXY=http://$HOST:$PORT"
    printf 'export HEKTOR_TOXIPROXY_SERVER=%q\n' "$SERVER"
    ;;
*)
    echo "usage: $0 install|install-cli|start|stop|status|env [PORT]" >&2
    exit 2
    ;;
esac
