#!/usr/bin/env bash
# scripts/s3.sh — run a real S3-compatible server (s3proxy, Apache-2.0, from
# Maven Central; its jclouds `filesystem` backend keeps the objects as plain
# files) for the archive tier's tests and for development. No Docker.
#
# Why s3proxy: Apache licence (MinIO is AGPL), one jar from Maven Central
# (fetched the way the Kafka jars are, with a checksum), and Java is already
# here for Kafka. 2.x runs on Java 11+, so the default Java 17 does.
#
# Owns: everything under .s3/ in the repo root (the cached jar in .s3/lib,
# the config, the objects in .s3/data, the log, the pid and port files).
# Does not own: the objects' layout inside the bucket (hektor-archive does).
#
# Usage: scripts/s3.sh start|stop|status|env
#   start   download the jar (once; checked against Maven Central's sha1),
#           pick a free port on 127.0.0.1 (or HEKTOR_S3_PORT), write the config,
#           create the bucket, start s3proxy in the background and wait until
#           it answers; prints the env lines below. Does nothing if our server
#           is already running.
#   stop    stop the server (TERM, then KILL after a bounded wait).
#   status  exit 0 if our server answers, 1 otherwise.
#   env     print `export HEKTOR_S3_ENDPOINT=http://127.0.0.1:PORT`,
#           `export HEKTOR_S3_BUCKET=...`, `export AWS_ACCESS_KEY_ID=...`,
#           `export AWS_SECRET_ACCESS_KEY=...`, `export AWS_REGION=us-east-1`
#           (use with eval; only while the server runs).
#
# Environment:
#   HEKTOR_S3_PORT           the port (default: a free one, kept across restarts
#                            while free)
#   HEKTOR_S3_VERSION        s3proxy version (default 2.9.0)
#   HEKTOR_S3_BUCKET         the bucket created at start (default hektor)
#   HEKTOR_S3_HOME           the directory it owns (default .s3 in the repo root)
#   HEKTOR_S3_START_TIMEOUT  seconds to wait for the server (default 60)
#   JAVA_HOME / JAVA         which java to run (Java 11 or newer)
#
# The credentials are fixed test values (identity hektor, secret
# hektor-test-secret): a local test server only. Wipe all objects with:
#   scripts/s3.sh stop && rm -rf .s3/data
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
S3_HOME="${HEKTOR_S3_HOME:-$REPO_ROOT/.s3}"
LIB_DIR="$S3_HOME/lib"
DATA_DIR="$S3_HOME/data"
CONF="$S3_HOME/s3proxy.conf"
LOG_FILE="$S3_HOME/s3proxy.log"
PID_FILE="$S3_HOME/s3proxy.pid"
PORT_FILE="$S3_HOME/port"
VERSION="${HEKTOR_S3_VERSION:-2.9.0}"
BUCKET="${HEKTOR_S3_BUCKET:-hektor}"
START_TIMEOUT="${HEKTOR_S3_START_TIMEOUT:-60}"
STOP_TIMEOUT=20
HOST=127.0.0.1
IDENTITY=hektor
CREDENTIAL=hektor-test-secret
MAVEN="${HEKTOR_MAVEN_REPO:-https://repo1.maven.org/maven2}"
JAR_NAME="s3proxy-$VERSION-jar-with-dependencies.jar"
JAR_URL="$MAVEN/org/gaul/s3proxy/$VERSION/$JAR_NAME"
JAR="$LIB_DIR/$JAR_NAME"

if [[ -n "${JAVA:-}" ]]; then
    :
elif [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
else
    JAVA=java
fi

log() { printf 's3.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- helpers ---------------------------------------------------------------

port_open() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# The port in use: HEKTOR_S3_PORT, else the one of the last start.
current_port() {
    if [[ -n "${HEKTOR_S3_PORT:-}" ]]; then
        echo "$HEKTOR_S3_PORT"
    elif [[ -s "$PORT_FILE" ]]; then
        tr -cd '0-9' <"$PORT_FILE"
    else
        return 1
    fi
}

# A free TCP port on 127.0.0.1: the last one if still free, else one from a
# bounded number of tries in 20000-29999.
pick_port() {
    if [[ -n "${HEKTOR_S3_PORT:-}" ]]; then
        [[ "$HEKTOR_S3_PORT" =~ ^[0-9]+$ ]] || die "HEKTOR_S3_PORT must be a number"
        port_open "$HEKTOR_S3_PORT" && die "port $HEKTOR_S3_PORT on $HOST is in use by another process"
        echo "$HEKTOR_S3_PORT"
        return 0
    fi
    local last
    if last="$(current_port)" && [[ -n "$last" ]] && ! port_open "$last"; then
        echo "$last"
        return 0
    fi
    local i p
    for ((i = 0; i < 50; i++)); do
        p=$((20000 + (RANDOM % 10000)))
        if ! port_open "$p"; then
            echo "$p"
            return 0
        fi
    done
    die "found no free port on $HOST in 50 tries; set HEKTOR_S3_PORT"
}

# The pid from the pid file if that process is alive and is our s3proxy.
running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid cmdline
    pid="$(tr -cd '0-9' <"$PID_FILE")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    if [[ "$cmdline" == *"$JAR_NAME"*"--properties $CONF"* ]]; then
        echo "$pid"
        return 0
    fi
    return 1
}

# True if an S3 server answers on the port (an anonymous request gets an S3
# XML error; any HTTP answer will do).
server_answers() {
    local port
    port="$(current_port)" || return 1
    port_open "$port" || return 1
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$HOST:$port/" 2>/dev/null)" || return 1
    [[ "$code" =~ ^[1-5][0-9][0-9]$ ]]
}

check_java() {
    command -v "$JAVA" >/dev/null 2>&1 || die "java not found; install a JDK 11+ or set JAVA_HOME"
    local version major
    version="$("$JAVA" -version 2>&1 | sed -n '1s/.*version "\([^"]*\)".*/\1/p')"
    major="${version%%.*}"
    if [[ "$major" == 1 ]]; then major="$(echo "$version" | cut -d. -f2)"; fi
    [[ "$major" =~ ^[0-9]+$ ]] || die "cannot tell the version of $JAVA ('$version')"
    ((major >= 11)) || die "s3proxy $VERSION needs Java 11 or newer; $JAVA is $version"
}

# Download the jar once, with retries, and check it against the sha1 Maven
# Central publishes beside it.
fetch_jar() {
    if [[ -f "$JAR" && -f "$JAR.complete" ]]; then
        return 0
    fi
    command -v curl >/dev/null 2>&1 || die "curl not found; it downloads the s3proxy jar"
    command -v sha1sum >/dev/null 2>&1 || die "sha1sum not found; it checks the s3proxy jar"
    mkdir -p "$LIB_DIR"
    log "downloading $JAR_URL (first run only)"
    local tmp="$JAR.tmp" want got
    rm -f "$tmp"
    curl -fsSL --retry 5 --retry-delay 2 --retry-all-errors --connect-timeout 15 --max-time 600 \
        -o "$tmp" "$JAR_URL" || die "could not download $JAR_URL"
    want="$(curl -fsSL --retry 5 --retry-delay 2 --retry-all-errors --connect-timeout 15 --max-time 60 \
        "$JAR_URL.sha1" | tr -cd '0-9a-f' | cut -c1-40)" || die "could not download $JAR_URL.sha1"
    got="$(sha1sum "$tmp" | cut -d' ' -f1)"
    if [[ -z "$want" || "$want" != "$got" ]]; then
        rm -f "$tmp"
        die "the jar's sha1 is $got, Maven Central says '$want'"
    fi
    mv "$tmp" "$JAR"
    echo "$got" >"$JAR.complete"
    log "s3proxy $VERSION cached in $LIB_DIR (sha1 $got)"
}

write_config() {
    local port="$1"
    mkdir -p "$DATA_DIR/$BUCKET"
    cat >"$CONF" <<EOF
# Written by scripts/s3.sh on every start; edit the script, not this file.
s3proxy.endpoint=http://$HOST:$port
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=$IDENTITY
s3proxy.credential=$CREDENTIAL
jclouds.provider=filesystem
jclouds.filesystem.basedir=$DATA_DIR
EOF
    echo "$port" >"$PORT_FILE"
}

print_env() {
    local port="$1"
    echo "HEKTOR_S3_ENDPOINT=http://$HOST:$port"
    echo "HEKTOR_S3_BUCKET=$BUCKET"
}

# --- commands --------------------------------------------------------------

cmd_start() {
    local pid port
    if pid="$(running_pid)" && server_answers; then
        port="$(current_port)"
        log "s3proxy already running (pid $pid) on http://$HOST:$port"
        print_env "$port"
        return 0
    fi
    if [[ -n "${pid:-}" ]]; then
        cmd_stop
    fi
    rm -f "$PID_FILE"
    check_java
    fetch_jar
    port="$(pick_port)"
    write_config "$port"
    log "starting s3proxy $VERSION on http://$HOST:$port (objects in $DATA_DIR, log $LOG_FILE)"
    # setsid: the server outlives the shell that started it.
    LOG_LEVEL=warn setsid "$JAVA" -Xmx256m -XX:+UseSerialGC -Djava.awt.headless=true \
        -jar "$JAR" --properties "$CONF" >>"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"
    local deadline=$((SECONDS + START_TIMEOUT))
    until server_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            tail -n 30 "$LOG_FILE" >&2 || true
            die "s3proxy exited during start-up (log: $LOG_FILE)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$LOG_FILE" >&2 || true
            cmd_stop || true
            die "s3proxy did not answer on http://$HOST:$port within ${START_TIMEOUT}s"
        fi
        sleep 0.5
    done
    log "s3proxy is up (pid $pid) on http://$HOST:$port, bucket $BUCKET"
    print_env "$port"
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        log "s3proxy not running"
        return 0
    fi
    log "stopping s3proxy (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "s3proxy still alive after ${STOP_TIMEOUT}s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
    rm -f "$PID_FILE"
    log "s3proxy stopped"
}

cmd_status() {
    local pid
    if pid="$(running_pid)" && server_answers; then
        log "s3proxy running (pid $pid) on http://$HOST:$(current_port)"
        return 0
    fi
    log "s3proxy not running"
    return 1
}

cmd_env() {
    local port
    port="$(current_port)" || die "s3proxy was never started (run: $0 start)"
    echo "export HEKTOR_S3_ENDPOINT=http://$HOST:$port"
    echo "export HEKTOR_S3_BUCKET=$BUCKET"
    echo "export AWS_ACCESS_KEY_ID=$IDENTITY"
    echo "export AWS_SECRET_ACCESS_KEY=$CREDENTIAL"
    echo "export AWS_REGION=us-east-1"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
