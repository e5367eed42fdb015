#!/usr/bin/env bash
# scripts/kafka.sh — run a real single-node Apache Kafka 4.x broker (KRaft
# mode, no ZooKeeper, no Docker) for development and CI.
#
# Owns: everything under .kafka/ in the repo root (jars, config, data, logs,
# pid file). Does not own: topics (the broker runs with
# auto.create.topics.enable=false, so the code under test creates its own)
# or anything outside .kafka/.
#
# Usage: scripts/kafka.sh start|stop|status|env
#   start   resolve the broker jars with Maven (once), write the config,
#           format the storage (once), start the broker in the background and
#           wait until it answers; prints HEKTOR_KAFKA_BROKERS=host:port.
#           Does nothing if our broker is already running.
#   stop    stop the broker (TERM, then KILL after a bounded wait).
#   status  exit 0 if the broker answers, 1 otherwise.
#   env     print `export HEKTOR_KAFKA_BROKERS=...` (use with eval).
#
# Environment:
#   HEKTOR_KAFKA_PORT             client listener port (default 9092)
#   HEKTOR_KAFKA_CONTROLLER_PORT  KRaft controller port (default 9093)
#   HEKTOR_KAFKA_VERSION          Kafka version to resolve (default: the pom's)
#   HEKTOR_KAFKA_START_TIMEOUT    seconds to wait for the broker (default 90)
#   JAVA_HOME / JAVA              which java to run (Java 17 or newer)
#
# Wipe everything (topics, offsets) with: scripts/kafka.sh stop && rm -rf .kafka
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
KAFKA_HOME="$REPO_ROOT/.kafka"
LIBS_DIR="$KAFKA_HOME/libs"
DATA_DIR="$KAFKA_HOME/data"
LOG_DIR="$KAFKA_HOME/logs"
CONF_DIR="$KAFKA_HOME/config"
PID_FILE="$KAFKA_HOME/kafka.pid"
POM="$SCRIPT_DIR/kafka/pom.xml"

HOST=127.0.0.1
PORT="${HEKTOR_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${HEKTOR_KAFKA_CONTROLLER_PORT:-9093}"
START_TIMEOUT="${HEKTOR_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT=30
BROKERS="$HOST:$PORT"

if [[ -n "${JAVA:-}" ]]; then
    :
elif [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
else
    JAVA=java
fi

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- helpers ---------------------------------------------------------------

# The pid from the pid file if that process is alive and is our broker.
running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(tr -cd '0-9' <"$PID_FILE")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    # Guard against pid reuse: the process must be a kafka.Kafka JVM run
    # with our config file.
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    if [[ "$cmdline" == *"kafka.Kafka $CONF_DIR/server.properties"* ]]; then
        echo "$pid"
        return 0
    fi
    return 1
}

# True if something accepts TCP connections on host:port.
port_open() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

check_java() {
    command -v "$JAVA" >/dev/null 2>&1 || die "java not found; install a JDK 17+ or set JAVA_HOME"
    local version major
    version="$("$JAVA" -version 2>&1 | sed -n '1s/.*version "\([^"]*\)".*/\1/p')"
    major="${version%%.*}"
    if [[ "$major" == 1 ]]; then major="$(echo "$version" | cut -d. -f2)"; fi
    [[ "$major" =~ ^[0-9]+$ ]] || die "cannot tell the version of $JAVA ('$version')"
    ((major >= 17)) || die "Kafka 4.x needs Java 17 or newer; $JAVA is $version"
}

# Run a Kafka CLI class with a quiet client-side logging config.
kafka_tool() {
    local class="$1"
    shift
    "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$CONF_DIR/tools-log4j2.properties" \
        -cp "$LIBS_DIR/*" "$class" "$@"
}

# True if the broker answers a metadata request (lists topics).
broker_answers() {
    port_open "$PORT" || return 1
    [[ -f "$CONF_DIR/probe.properties" && -d "$LIBS_DIR" ]] || return 1
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" \
        --command-config "$CONF_DIR/probe.properties" --list >/dev/null 2>>"$LOG_DIR/probe.log"
}

resolve_jars() {
    if [[ -f "$LIBS_DIR/.complete" ]]; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn not found; install Maven to resolve the Kafka jars"
    log "resolving Kafka jars with Maven into $LIBS_DIR (first run only)"
    local tmp="$KAFKA_HOME/libs.tmp"
    rm -rf "$tmp"
    local extra=()
    if [[ -n "${HEKTOR_KAFKA_VERSION:-}" ]]; then
        extra+=("-Dkafka.version=$HEKTOR_KAFKA_VERSION")
    fi
    if ! mvn -B -q -f "$POM" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" -DincludeScope=runtime "${extra[@]}" >"$KAFKA_HOME/mvn.log" 2>&1; then
        tail -n 40 "$KAFKA_HOME/mvn.log" >&2 || true
        die "Maven could not resolve the Kafka jars (full log: $KAFKA_HOME/mvn.log)"
    fi
    ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "Maven finished but no kafka_2.13 jar is in $tmp"
    rm -rf "$LIBS_DIR"
    mv "$tmp" "$LIBS_DIR"
    basename "$(ls "$LIBS_DIR"/kafka_2.13-*.jar)" .jar | sed 's/^kafka_2.13-//' >"$LIBS_DIR/.complete"
    local jars=("$LIBS_DIR"/*.jar)
    log "Kafka $(cat "$LIBS_DIR/.complete") resolved (${#jars[@]} jars)"
}

write_config() {
    mkdir -p "$CONF_DIR" "$DATA_DIR" "$LOG_DIR"
    # Rewritten on every start so a changed port takes effect. The quorum is
    # static (controller.quorum.voters), so the storage does not record the
    # controller's address and survives a port change.
    cat >"$CONF_DIR/server.properties" <<EOF
# Written by scripts/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA_DIR
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
auto.create.topics.enable=false
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=168
log.segment.bytes=104857600
EOF
    # Broker logging: WARN and above to .kafka/logs/server.log.
    cat >"$CONF_DIR/log4j2.properties" <<EOF
status = warn
name = hektor-kafka-broker
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $LOG_DIR/server.log
appender.file.filePattern = $LOG_DIR/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 10MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = warn
rootLogger.appenderRef.file.ref = FILE
EOF
    # CLI tools: WARN and above to stderr.
    cat >"$CONF_DIR/tools-log4j2.properties" <<EOF
status = warn
name = hektor-kafka-tools
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = STDERR
EOF
    # Admin client settings for readiness probes: fail fast, don't hang.
    cat >"$CONF_DIR/probe.properties" <<EOF
request.timeout.ms=3000
default.api.timeout.ms=5000
socket.connection.setup.timeout.ms=1000
socket.connection.setup.timeout.max.ms=2000
EOF
}

format_storage() {
    if [[ -f "$DATA_DIR/meta.properties" ]]; then
        return 0
    fi
    local cluster_id
    if [[ -s "$KAFKA_HOME/cluster.id" ]]; then
        cluster_id="$(cat "$KAFKA_HOME/cluster.id")"
    else
        cluster_id="$(kafka_tool kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/format.log" | tail -n1)"
        [[ -n "$cluster_id" ]] || die "could not generate a cluster id (see $LOG_DIR/format.log)"
        echo "$cluster_id" >"$KAFKA_HOME/cluster.id"
    fi
    log "formatting storage in $DATA_DIR (cluster id $cluster_id)"
    if ! kafka_tool kafka.tools.StorageTool format --ignore-formatted -t "$cluster_id" \
        -c "$CONF_DIR/server.properties" >>"$LOG_DIR/format.log" 2>&1; then
        tail -n 20 "$LOG_DIR/format.log" >&2 || true
        die "formatting the storage failed (see $LOG_DIR/format.log)"
    fi
}

# --- commands --------------------------------------------------------------

cmd_start() {
    local pid
    if pid="$(running_pid)"; then
        broker_answers || die "our broker (pid $pid) is running but does not answer on $BROKERS (started on another port? see $CONF_DIR/server.properties, or run: $0 stop)"
        log "broker already running (pid $pid) on $BROKERS"
        echo "HEKTOR_KAFKA_BROKERS=$BROKERS"
        return 0
    fi
    rm -f "$PID_FILE"
    for p in "$PORT" "$CONTROLLER_PORT"; do
        if port_open "$p"; then
            die "port $p on $HOST is already in use by another process; stop it or choose other ports with HEKTOR_KAFKA_PORT / HEKTOR_KAFKA_CONTROLLER_PORT"
        fi
    done

    check_java
    mkdir -p "$KAFKA_HOME"
    resolve_jars
    write_config
    format_storage

    log "starting Kafka $(cat "$LIBS_DIR/.complete") on $BROKERS (logs: $LOG_DIR)"
    # setsid: the broker gets its own session, so it outlives the shell that
    # started it and is not hit by signals sent to that shell's process group.
    setsid "$JAVA" -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true \
        -Dkafka.logs.dir="$LOG_DIR" \
        -Dlog4j2.configurationFile="$CONF_DIR/log4j2.properties" \
        -cp "$LIBS_DIR/*" kafka.Kafka "$CONF_DIR/server.properties" \
        >>"$LOG_DIR/kafka.out" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"

    local deadline=$((SECONDS + START_TIMEOUT))
    until broker_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            log "the broker exited during start-up; last lines of its logs:"
            tail -n 30 "$LOG_DIR/kafka.out" "$LOG_DIR/server.log" >&2 2>/dev/null || true
            die "Kafka did not start"
        fi
        if ((SECONDS >= deadline)); then
            log "the broker did not answer on $BROKERS within ${START_TIMEOUT}s; last lines of its logs:"
            tail -n 30 "$LOG_DIR/kafka.out" "$LOG_DIR/server.log" >&2 2>/dev/null || true
            cmd_stop || true
            die "Kafka did not become ready"
        fi
        sleep 1
    done
    log "broker is up (pid $pid)"
    echo "HEKTOR_KAFKA_BROKERS=$BROKERS"
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        log "broker not running"
        return 0
    fi
    log "stopping broker (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "broker still alive after ${STOP_TIMEOUT}s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
            break
        fi
        sleep 0.5
    done
    rm -f "$PID_FILE"
    log "broker stopped"
}

cmd_status() {
    local pid
    if pid="$(running_pid)" && broker_answers; then
        log "broker running (pid $pid) and answering on $BROKERS"
        return 0
    fi
    if [[ -n "${pid:-}" ]]; then
        log "broker process $pid is alive but does not answer on $BROKERS"
    else
        log "broker not running"
    fi
    return 1
}

cmd_env() {
    echo "export HEKTOR_KAFKA_BROKERS=$BROKERS"
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
