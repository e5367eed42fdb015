#!/usr/bin/env bash
# scripts/kafka.sh — run a real single-node Apache Kafka 4.x broker (KRaft
# mode, no ZooKeeper, no Docker) for development and CI.
#
# The broker has two client listeners on 127.0.0.1:
#   PLAINTEXT  HEKTOR_KAFKA_PORT (9092): no TLS, no authentication.
#   SASL_SSL   HEKTOR_KAFKA_SASL_PORT (9094): TLS with a self-signed CA and
#              SASL/SCRAM-SHA-512, user `hektor` with a random password; the
#              broker certificate has SAN IP:127.0.0.1, so clients keep
#              hostname verification on. Clients (librdkafka, e.g. hektor
#              --kafka-config) use .kafka/client-sasl-ssl.properties.
#
# Owns: everything under .kafka/ in the repo root (jars, config, data, logs,
# pid file, the CA and broker key material in .kafka/tls/, the SCRAM
# password in .kafka/sasl/, and .kafka/client-sasl-ssl.properties). Does not
# own: topics (the broker runs with auto.create.topics.enable=false, so the
# code under test creates its own) or anything outside .kafka/.
#
# Usage: scripts/kafka.sh start|stop|status|env
#   start   resolve the broker jars with Maven (once), generate the CA, the
#           broker certificate and the SCRAM password (once), write the
#           config, format the storage (once), start the broker in the
#           background, wait until it answers on PLAINTEXT, make sure the
#           SCRAM user exists and a TLS+SCRAM client gets in; prints
#           HEKTOR_KAFKA_BROKERS=host:port and HEKTOR_KAFKA_SASL_BROKERS=....
#           Does nothing if our broker is already running.
#   stop    stop the broker (TERM, then KILL after a bounded wait).
#   status  exit 0 if the broker answers, 1 otherwise.
#   env     print `export HEKTOR_KAFKA_BROKERS=...`,
#           `export HEKTOR_KAFKA_SASL_BROKERS=...` and
#           `export HEKTOR_KAFKA_SASL_CONFIG=<the client properties file>`
#           (use with eval).
#
# Environment:
#   HEKTOR_KAFKA_PORT             PLAINTEXT client listener port (default 9092)
#   HEKTOR_KAFKA_SASL_PORT        SASL_SSL client listener port (default 9094)
#   HEKTOR_KAFKA_CONTROLLER_PORT  KRaft controller port (default 9093)
#   HEKTOR_KAFKA_VERSION          Kafka version to resolve (default: the pom's)
#   HEKTOR_KAFKA_START_TIMEOUT    seconds to wait for the broker (default 90)
#   HEKTOR_KAFKA_EXTRA_PORT       a third client listener, EXTRA (PLAINTEXT), on
#                                 this port (default: none)
#   HEKTOR_KAFKA_EXTRA_ADVERTISED the HOST:PORT the EXTRA listener advertises
#                                 (default 127.0.0.1:HEKTOR_KAFKA_EXTRA_PORT): a
#                                 proxy in front of it, so that clients that
#                                 bootstrap through the proxy stay behind it
#   HEKTOR_KAFKA_EXTRA_LISTENERS  more PLAINTEXT client listeners, space-separated
#                                 NAME=PORT=HOST:PORT entries (the listener's name,
#                                 its port, the address it advertises), e.g.
#                                 "TO_EAST=19103=127.0.0.1:19143": one per proxy
#                                 in front of the broker (scripts/regions.sh)
#   HEKTOR_KAFKA_HOME             the broker's home, everything said of .kafka/
#                                 above (default .kafka in the repo root); with
#                                 other ports, a second, private broker
#   JAVA_HOME / JAVA              which java to run (Java 17 or newer)
#
# Wipe everything (topics, offsets, keys, password) with:
#   scripts/kafka.sh stop && rm -rf .kafka
# The key material and the password are for a local test broker only: they are
# kept unencrypted (mode 600) and passed on the tools' command lines.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
KAFKA_HOME="${HEKTOR_KAFKA_HOME:-$REPO_ROOT/.kafka}"
LIBS_DIR="$KAFKA_HOME/libs"
DATA_DIR="$KAFKA_HOME/data"
LOG_DIR="$KAFKA_HOME/logs"
CONF_DIR="$KAFKA_HOME/config"
PID_FILE="$KAFKA_HOME/kafka.pid"
TLS_DIR="$KAFKA_HOME/tls"
SASL_DIR="$KAFKA_HOME/sasl"
CLIENT_SASL_CONFIG="$KAFKA_HOME/client-sasl-ssl.properties"
SASL_USER=hektor
POM="$SCRIPT_DIR/kafka/pom.xml"

HOST=127.0.0.1
PORT="${HEKTOR_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${HEKTOR_KAFKA_CONTROLLER_PORT:-9093}"
SASL_PORT="${HEKTOR_KAFKA_SASL_PORT:-9094}"
EXTRA_PORT="${HEKTOR_KAFKA_EXTRA_PORT:-}"
EXTRA_ADVERTISED="${HEKTOR_KAFKA_EXTRA_ADVERTISED:-}"
if [[ -n "$EXTRA_ADVERTISED" && -z "$EXTRA_PORT" ]]; then
    echo "kafka.sh: error: HEKTOR_KAFKA_EXTRA_ADVERTISED needs HEKTOR_KAFKA_EXTRA_PORT" >&2
    exit 1
fi
EXTRA_LISTENER=""
EXTRA_ADVERTISED_LISTENER=""
EXTRA_PROTOCOL=""
if [[ -n "$EXTRA_PORT" ]]; then
    EXTRA_LISTENER=",EXTRA://$HOST:$EXTRA_PORT"
    EXTRA_ADVERTISED_LISTENER=",EXTRA://${EXTRA_ADVERTISED:-$HOST:$EXTRA_PORT}"
    EXTRA_PROTOCOL=",EXTRA:PLAINTEXT"
fi
EXTRA_PORTS="$EXTRA_PORT"
for spec in ${HEKTOR_KAFKA_EXTRA_LISTENERS:-}; do
    IFS='=' read -r name port advertised <<<"$spec"
    if [[ ! "$name" =~ ^[A-Z][A-Z0-9_]*$ || "$name" =~ ^(PLAINTEXT|SASL_SSL|CONTROLLER|EXTRA)$ ||
        ! "$port" =~ ^[0-9]+$ || ! "$advertised" =~ ^[^:=]+:[0-9]+$ ]]; then
        echo "kafka.sh: error: bad HEKTOR_KAFKA_EXTRA_LISTENERS entry '$spec' (NAME=PORT=HOST:PORT)" >&2
        exit 1
    fi
    EXTRA_LISTENER+=",$name://$HOST:$port"
    EXTRA_ADVERTISED_LISTENER+=",$name://$advertised"
    EXTRA_PROTOCOL+=",$name:PLAINTEXT"
    EXTRA_PORTS+=" $port"
done
START_TIMEOUT="${HEKTOR_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT=30
BROKERS="$HOST:$PORT"
SASL_BROKERS="$HOST:$SASL_PORT"

if [[ -n "${JAVA:-}" ]]; then
    :
elif [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
else
    JAVA=java
fi

if [[ -n "${KEYTOOL:-}" ]]; then
    :
elif [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/keytool" ]]; then
    KEYTOOL="$JAVA_HOME/bin/keytool"
elif [[ "$JAVA" == */* && -x "$(dirname "$JAVA")/keytool" ]]; then
    KEYTOOL="$(dirname "$JAVA")/keytool"
else
    KEYTOOL=keytool
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

# True if a TLS + SCRAM client (our user, trusting our CA, verifying the
# broker's hostname) can list the topics on the SASL_SSL listener.
sasl_answers() {
    port_open "$SASL_PORT" || return 1
    [[ -f "$CONF_DIR/sasl-probe.properties" && -d "$LIBS_DIR" ]] || return 1
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$SASL_BROKERS" \
        --command-config "$CONF_DIR/sasl-probe.properties" --list >/dev/null 2>>"$LOG_DIR/sasl-probe.log"
}

# Kafka's ConfigCommand (in kafka-tools since 4.x, in the core jar before).
config_command() {
    local out
    if out="$(kafka_tool org.apache.kafka.tools.ConfigCommand "$@" 2>&1)"; then
        printf '%s\n' "$out"
        return 0
    fi
    if [[ "$out" == *"ould not find or load main class"* ]]; then
        kafka_tool kafka.admin.ConfigCommand "$@" 2>&1
        return
    fi
    printf '%s\n' "$out"
    return 1
}

sasl_password() {
    tr -d '\r\n' <"$SASL_DIR/$SASL_USER.password"
}

# The SCRAM password of our user, generated once.
ensure_password() {
    if [[ -s "$SASL_DIR/$SASL_USER.password" ]]; then
        return 0
    fi
    command -v openssl >/dev/null 2>&1 || die "openssl not found; it generates the SCRAM password"
    mkdir -p "$SASL_DIR"
    chmod 700 "$SASL_DIR"
    (umask 077 && openssl rand -hex 24 >"$SASL_DIR/$SASL_USER.password.tmp") ||
        die "could not generate the SCRAM password"
    mv "$SASL_DIR/$SASL_USER.password.tmp" "$SASL_DIR/$SASL_USER.password"
    log "generated the SCRAM password of user $SASL_USER in $SASL_DIR/$SASL_USER.password"
}

# Generate, in the current directory, a CA and a broker certificate signed by
# it for $HOST (SAN IP:$HOST and DNS:localhost), and the broker's PKCS12
# keystore; check that the chain verifies and that Java reads the keystore.
generate_tls_here() {
    openssl rand -hex 24 >keystore.password &&
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
            -keyout ca.key -out ca.pem -subj "/CN=hektor test CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" &&
        openssl req -newkey rsa:2048 -nodes -sha256 \
            -keyout broker.key -out broker.csr -subj "/CN=$HOST" &&
        printf '%s\n' "subjectAltName=IP:$HOST,DNS:localhost" "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >broker.ext &&
        openssl x509 -req -sha256 -days 3650 -in broker.csr -CA ca.pem -CAkey ca.key \
            -CAcreateserial -extfile broker.ext -out broker.pem &&
        openssl verify -CAfile ca.pem broker.pem &&
        openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
            -passout file:keystore.password -out broker.p12 &&
        "$KEYTOOL" -list -storetype PKCS12 -keystore broker.p12 -storepass:file keystore.password &&
        rm -f broker.csr broker.ext ca.srl
}

# The test CA and the broker's certificate and keystore, generated once into
# $TLS_DIR (with openssl; keytool checks that Java reads the keystore).
ensure_tls() {
    if [[ -s "$TLS_DIR/ca.pem" && -s "$TLS_DIR/broker.p12" && -s "$TLS_DIR/keystore.password" ]]; then
        return 0
    fi
    command -v openssl >/dev/null 2>&1 || die "openssl not found; it generates the test CA and the broker certificate"
    command -v "$KEYTOOL" >/dev/null 2>&1 || die "keytool not found (it comes with the JDK; set JAVA_HOME)"
    log "generating a test CA and a broker certificate for $HOST in $TLS_DIR (first run only)"
    local tmp="$KAFKA_HOME/tls.tmp" out="$KAFKA_HOME/tls.log"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    chmod 700 "$tmp"
    if ! (cd "$tmp" && umask 077 && generate_tls_here) >"$out" 2>&1; then
        tail -n 20 "$out" >&2 || true
        die "generating the TLS material failed (see $out)"
    fi
    rm -rf "$TLS_DIR"
    mv "$tmp" "$TLS_DIR"
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
    # server.properties and the probe config hold the keystore and SCRAM passwords.
    chmod 700 "$CONF_DIR"
    local keystore_password password
    keystore_password="$(tr -d '\r\n' <"$TLS_DIR/keystore.password")"
    password="$(sasl_password)"
    # Rewritten on every start so a changed port takes effect. The quorum is
    # static (controller.quorum.voters), so the storage does not record the
    # controller's address and survives a port change.
    cat >"$CONF_DIR/server.properties" <<EOF
# Written by scripts/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,SASL_SSL://$HOST:$SASL_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT$EXTRA_LISTENER
advertised.listeners=PLAINTEXT://$HOST:$PORT,SASL_SSL://$HOST:$SASL_PORT$EXTRA_ADVERTISED_LISTENER
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL$EXTRA_PROTOCOL
# SASL_SSL: TLS (no client certificates) and SCRAM-SHA-512; the credentials
# live in the cluster metadata (StorageTool --add-scram / ConfigCommand).
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/broker.p12
listener.name.sasl_ssl.ssl.keystore.password=$keystore_password
listener.name.sasl_ssl.ssl.key.password=$keystore_password
listener.name.sasl_ssl.ssl.client.auth=none
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
    # The same for the SASL_SSL listener, as a Java client.
    (
        umask 077
        cat "$CONF_DIR/probe.properties" - >"$CONF_DIR/sasl-probe.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$SASL_USER" password="$password";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
ssl.endpoint.identification.algorithm=https
EOF
        # For librdkafka clients (hektor --kafka-config): HEKTOR_KAFKA_SASL_CONFIG.
        cat >"$CLIENT_SASL_CONFIG.tmp" <<EOF
# Written by scripts/kafka.sh: librdkafka settings for the test broker's
# SASL_SSL listener at $SASL_BROKERS (hektor --kafka-config THIS_FILE).
security.protocol=SASL_SSL
sasl.mechanisms=SCRAM-SHA-512
sasl.username=$SASL_USER
sasl.password=$password
ssl.ca.location=$TLS_DIR/ca.pem
# The broker certificate names IP:$HOST, so hostname verification stays on.
ssl.endpoint.identification.algorithm=https
EOF
    )
    mv "$CLIENT_SASL_CONFIG.tmp" "$CLIENT_SASL_CONFIG"
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
    # The SCRAM user is part of the initial metadata; a storage formatted by an
    # older kafka.sh gets it from ensure_sasl_user after the start instead.
    if ! kafka_tool kafka.tools.StorageTool format --ignore-formatted -t "$cluster_id" \
        -c "$CONF_DIR/server.properties" \
        --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$(sasl_password)]" \
        >>"$LOG_DIR/format.log" 2>&1; then
        tail -n 20 "$LOG_DIR/format.log" >&2 || true
        die "formatting the storage failed (see $LOG_DIR/format.log)"
    fi
}

# Make sure a TLS + SCRAM client gets in on the SASL_SSL listener: if it does
# not (a storage formatted before the SCRAM user existed, or a new password),
# set the user's credential over PLAINTEXT with ConfigCommand and wait until
# the listener lets it in. Bounded by the start deadline ($1, in SECONDS).
ensure_sasl_user() {
    local deadline="$1"
    if sasl_answers; then
        return 0
    fi
    port_open "$SASL_PORT" || die "nothing listens on the SASL_SSL port $SASL_BROKERS (is the broker running with the config of an older kafka.sh? run: $0 stop && $0 start)"
    log "setting the SCRAM-SHA-512 credential of user $SASL_USER"
    local out
    if ! out="$(config_command --bootstrap-server "$BROKERS" --command-config "$CONF_DIR/probe.properties" \
        --alter --entity-type users --entity-name "$SASL_USER" \
        --add-config "SCRAM-SHA-512=[password=$(sasl_password)]")"; then
        printf '%s\n' "$out" | tail -n 20 >&2
        return 1
    fi
    until sasl_answers; do
        if ((SECONDS >= deadline)); then
            log "a TLS + SCRAM client is still refused on $SASL_BROKERS; last lines of $LOG_DIR/sasl-probe.log:"
            tail -n 20 "$LOG_DIR/sasl-probe.log" >&2 2>/dev/null || true
            return 1
        fi
        sleep 1
    done
}

# --- commands --------------------------------------------------------------

cmd_start() {
    local pid
    if pid="$(running_pid)"; then
        broker_answers || die "our broker (pid $pid) is running but does not answer on $BROKERS (started on another port? see $CONF_DIR/server.properties, or run: $0 stop)"
        ensure_sasl_user $((SECONDS + START_TIMEOUT)) || die "our broker (pid $pid) is running but a TLS + SCRAM client is refused on $SASL_BROKERS (run: $0 stop && $0 start)"
        log "broker already running (pid $pid) on $BROKERS and $SASL_BROKERS (SASL_SSL)"
        echo "HEKTOR_KAFKA_BROKERS=$BROKERS"
        echo "HEKTOR_KAFKA_SASL_BROKERS=$SASL_BROKERS"
        return 0
    fi
    rm -f "$PID_FILE"
    for p in "$PORT" "$SASL_PORT" "$CONTROLLER_PORT" $EXTRA_PORTS; do
        if port_open "$p"; then
            die "port $p on $HOST is already in use by another process; stop it or choose other ports with HEKTOR_KAFKA_PORT / HEKTOR_KAFKA_SASL_PORT / HEKTOR_KAFKA_CONTROLLER_PORT"
        fi
    done

    check_java
    mkdir -p "$KAFKA_HOME"
    resolve_jars
    ensure_tls
    ensure_password
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
    if ! ensure_sasl_user "$deadline"; then
        log "the SASL_SSL listener on $SASL_BROKERS does not let our SCRAM user in; last lines of the broker's log:"
        tail -n 30 "$LOG_DIR/server.log" >&2 2>/dev/null || true
        cmd_stop || true
        die "Kafka's SASL_SSL listener did not become ready"
    fi
    log "broker is up (pid $pid) on $BROKERS (PLAINTEXT) and $SASL_BROKERS (SASL_SSL, SCRAM-SHA-512 user $SASL_USER; client settings in $CLIENT_SASL_CONFIG)"
    echo "HEKTOR_KAFKA_BROKERS=$BROKERS"
    echo "HEKTOR_KAFKA_SASL_BROKERS=$SASL_BROKERS"
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
        if ! port_open "$SASL_PORT"; then
            log "broker running (pid $pid) and answering on $BROKERS, but nothing listens on $SASL_BROKERS (SASL_SSL)"
            return 1
        fi
        log "broker running (pid $pid) and answering on $BROKERS; $SASL_BROKERS (SASL_SSL) is open"
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
    echo "export HEKTOR_KAFKA_SASL_BROKERS=$SASL_BROKERS"
    printf 'export HEKTOR_KAFKA_SASL_CONFIG=%q\n' "$CLIENT_SASL_CONFIG"
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
