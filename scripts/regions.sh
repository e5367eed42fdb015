#!/usr/bin/env bash
# scripts/regions.sh — a whole local multi-region setup on 127.0.0.1, for tests,
# benches and a newcomer: N regions, each a single-broker KRaft cluster (run by
# scripts/kafka.sh with a home and ports of its own), one Toxiproxy server with
# two proxies for every ordered pair of regions (the WAN: Kafka, and HTTP
# between hektor nodes), and Apache Kafka's MirrorMaker 2 (dedicated mode)
# mirroring every region's `hektor.*` topics into every other region,
# active-active with the default replication policy:
# west's `hektor.C.vectors` appears in east as `west.hektor.C.vectors`.
#
# MirrorMaker lives in the source region (HEKTOR_MM2_SIDE=source, the default):
#
#   west broker ──▶ west's MM2 ──▶ proxy west_to_east ──▶ east broker (listener TO_WEST)
#   east broker ──▶ east's MM2 ──▶ proxy east_to_west ──▶ west broker (listener TO_EAST)
#
# or in the target region (HEKTOR_MM2_SIDE=target, the layout before issue
# #17's lag work, kept to measure against):
#
#   west broker (listener TO_EAST) ──▶ proxy west_to_east ──▶ east's MM2 ──▶ east broker
#
# The WAN. Proxy `A_to_B` carries the Kafka bytes that cross from region A to
# region B (and their answers): A's records mirrored into B, and nothing else.
# Every broker has a listener per other region (TO_X: what region X's clients
# use) that advertises the address of the proxy in front of it, so a Kafka
# client that bootstraps through a proxy is sent back to the proxy for every
# later connection and never reaches the broker directly. Latency or a
# partition injected on `west_to_east` (Toxiproxy's HTTP API, HEKTOR_TOXIPROXY)
# delays or cuts west → east mirroring and nothing else; put latency on both
# of its streams (a request and its answer): with MM2 at the source, the
# records travel in produce requests (upstream), at the target in fetch
# answers (downstream). Local clients of a region use its PLAINTEXT port.
# HTTP between regions crosses the WAN too: region B's hektor node (the one
# the other regions call, `--region-peers`) listens on HEKTOR_REGION_B_HTTP,
# and proxy `A_to_B_http` in front of it carries A's nodes' calls to B
# (requests upstream, answers downstream):
#
#   west's nodes ──▶ proxy west_to_east_http ──▶ east's node (127.0.0.1:19272)
#
# This script runs no hektor node (a proxy closes its connections until the
# node listens). For one WAN, put the same toxics on `A_to_B_http` as on
# `A_to_B`.
#
# Why at the source. Over a round trip R, a consumer has one fetch in flight
# per broker: a record that lands while the fetch is travelling back waits for
# the next one, so consuming across the WAN costs up to R on top of the one-way
# delay R/2 (measured at 70 ms and 100 writes/s: 82-97 ms p50 from a record
# read in its region to its copy read in the other). A producer across the WAN
# keeps up to 5 requests in flight, so a record leaves at once and lands after
# R/2 (measured: 39-50 ms p50). See docs/benchmarks.md, "Regions".
#
# MirrorMaker: one MM2 process per region, living in that region. At the
# source (`--clusters` = every other region) it runs the flows REGION->X: it
# consumes its own broker and produces to X through proxy REGION_to_X. At the
# target (`--clusters REGION`) it runs X->REGION: consumes X through proxy
# X_to_REGION, produces locally. A flow's Connect worker group, its
# coordinator and internal topics (mm2-*.internal, heartbeats) always live in
# the flow's target cluster, so at the source they are across the WAN: a
# partition also cuts the worker off its group. A worker that cannot reach its
# coordinator for heartbeat.interval.ms (3 s) stops its tasks (no copies are
# lost: offsets are committed for acknowledged records only, so the restarted
# task re-sends the rest, at least once); after the heal it rejoins and Connect
# hands the tasks out again after scheduled.rebalance.max.delay.ms (its default,
# 5 minutes, stalled mirroring 302 s after a 30 s partition; 1 s here): the
# task runs again ~2 s after the heal. The producer is tuned (Connect's default
# is one request in flight with 16 KiB batches, ~300 records/s when it writes
# over a 70 ms RTT).
# Dedicated mode ignores most worker settings at the top level: they are set
# per cluster alias (`east.producer.batch.size`, ...), and `start` checks in
# each MM2's log that its worker and its source task's producer really got them.
# Heartbeats are on (1 s): region B's `A.heartbeats` shows A → B mirroring is
# alive (start waits for it; with 3+ regions heartbeats also travel two hops,
# `east.west.heartbeats`, as MM2 always replicates them; hektor topics go one
# hop only: a mirrored name never matches the topic regex). Checkpoints and
# offset syncs are off: hektor uses no consumer groups (the offsets a shard
# applied live with its data); so each MM2 logs one expected ERROR per flow,
# "Failed to configure MirrorCheckpointConnector" (it refuses to run so).
# A new topic makes MM2 restart its source task (~1-1.5 s without mirroring
# anything of that flow), found within refresh.topics.interval.seconds (5 s).
# MM2 is at least once: a SIGKILLed MM2 redelivers what it wrote since its
# last offset flush (offset.flush.interval.ms, 5 s here), and the mirrored
# offsets then differ from the origin's.
#
# Owns: everything under .regions/ in the repo root:
#   .regions/jars/{kafka,mm2}   jars resolved with Maven (first run only; kept
#                               by `stop --wipe`, a cache like .kafka/libs)
#   .regions/<region>/kafka     the region's broker (HEKTOR_KAFKA_HOME)
#   .regions/<region>/mm2       its MM2: mm2.properties, log4j2, pid, mm2.log
#   .regions/toxiproxy          the Toxiproxy server's pid, log, proxies
# Does not own: the toxiproxy binaries (scripts/toxiproxy.sh installs them into
# .toxiproxy/bin), .kafka/ (the default broker) or any topic hektor creates.
#
# Usage: scripts/regions.sh start|stop [--wipe]|status|env|reset
#   start   resolve the jars (once), start the brokers, Toxiproxy with its
#           proxies, and the MM2s (whatever is not running yet), wait until
#           every broker answers and heartbeats cross every pair of regions,
#           check MM2's producer settings in its log, and print `env`.
#           Idempotent: a running setup is only checked.
#   stop    stop the MM2s, Toxiproxy and the brokers (TERM, then KILL after a
#           bounded wait); data stays unless `stop --wipe`.
#   status  exit 0 if every broker, MM2 and the Toxiproxy API with every proxy
#           is up, 1 otherwise (a quick check of processes and ports).
#   env     print shell exports (use with eval):
#             HEKTOR_REGIONS="west east"
#             HEKTOR_REGION_WEST_BROKERS=127.0.0.1:19092 (a region's local clients)
#             HEKTOR_TOXIPROXY=http://127.0.0.1:18474    (the API)
#             HEKTOR_MM2_SIDE=source                      (where MM2 lives)
#             HEKTOR_PROXY_WEST_TO_EAST=west_to_east      (proxy name, per pair:
#               what crosses from west to east)
#             HEKTOR_PROXY_WEST_TO_EAST_ADDR=127.0.0.1:19242 (where it listens:
#               west's way to east's broker at the source, east's way to west's
#               at the target)
#             HEKTOR_REGION_WEST_HTTP=127.0.0.1:19172   (where west's hektor node
#               must listen for the other regions)
#             HEKTOR_PROXY_WEST_TO_EAST_HTTP=west_to_east_http (per pair: west's
#               nodes' HTTP calls to east's node)
#             HEKTOR_PROXY_WEST_TO_EAST_HTTP_ADDR=127.0.0.1:19163 (where it listens)
#             HEKTOR_REGION_WEST_PEERS=east=http://127.0.0.1:19163 (west's node's
#               --region-peers: every other region through its _http proxy)
#   reset   remove every toxic and enable every proxy (Toxiproxy's /reset).
#
# Ports, region i (0-based, in HEKTOR_REGIONS order), base = BASE + STEP * i:
#   base       PLAINTEXT (local clients)      base + 1   KRaft controller
#   base + 2   SASL_SSL (kafka.sh opens it; unused here)
#   base + 10 + j  listener TO_<region j> (region j's clients use it)
#   base + 50 + j  the proxy in front of that listener: j_to_i with MM2 at
#                  the source, i_to_j at the target
#   base + 70 + j  proxy i_to_j_http, to region j's hektor node (base_j + 80)
#   base + 80      region i's hektor node (HTTP; not started here)
#
# Environment:
#   HEKTOR_REGIONS                 region names (default "west east"; lower-case
#                                  letters and digits, a letter first; 10 at most)
#   HEKTOR_REGIONS_BASE_PORT       BASE (default 19092)
#   HEKTOR_REGIONS_PORT_STEP       STEP (default 100, at least 81)
#   HEKTOR_REGIONS_TOXIPROXY_PORT  Toxiproxy's API port (default 18474)
#   HEKTOR_MIRROR_TOPICS           the topics MM2 mirrors, a Java regex matched
#                                  against the whole name (default `hektor\..*`;
#                                  mirrored topics, `west.hektor...`, never match
#                                  it, and the default policy skips cycles and
#                                  internal topics anyway)
#   HEKTOR_MM2_VERSION             connect-mirror version (default 4.3.1, the
#                                  newest Maven Central serves; it runs against
#                                  the 4.4 brokers on its own classpath)
#   HEKTOR_MM2_SIDE                `source` (default): each region's MM2 mirrors
#                                  its own topics out, producing across the WAN;
#                                  `target`: it mirrors the others' in, consuming
#                                  across the WAN (see above)
#   HEKTOR_MM2_PRODUCER            `tuned` (default) or `connect`: Connect's own
#                                  producer defaults, to measure against
#   HEKTOR_MM2_LINGER_MS           the tuned producer's linger.ms (default 0 at the
#                                  source, 5 at the target)
#   HEKTOR_MM2_TASKS               tasks.max of each flow (default 1)
#   HEKTOR_REGIONS_START_TIMEOUT   seconds `start` waits for mirroring (default 240)
#   JAVA_HOME / JAVA               which java to run (Java 17 or newer)
#
# Wipe everything with: scripts/regions.sh stop && rm -rf .regions
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
HOME_DIR="$REPO_ROOT/.regions"
JARS_DIR="$HOME_DIR/jars"
KAFKA_JARS="$JARS_DIR/kafka"
MM2_JARS="$JARS_DIR/mm2"
TOXI_DIR="$HOME_DIR/toxiproxy"
TOXI_PID="$TOXI_DIR/server.pid"
TOXI_LOG="$TOXI_DIR/server.log"
LOCK_FILE="$HOME_DIR/lock"
KAFKA_SH="$SCRIPT_DIR/kafka.sh"
TOXIPROXY_SH="$SCRIPT_DIR/toxiproxy.sh"
KAFKA_POM="$SCRIPT_DIR/kafka/pom.xml"

HOST=127.0.0.1
read -r -a REGIONS <<<"${HEKTOR_REGIONS:-west east}"
BASE_PORT="${HEKTOR_REGIONS_BASE_PORT:-19092}"
PORT_STEP="${HEKTOR_REGIONS_PORT_STEP:-100}"
TOXI_PORT="${HEKTOR_REGIONS_TOXIPROXY_PORT:-18474}"
TOXI_API="http://$HOST:$TOXI_PORT"
MIRROR_TOPICS="${HEKTOR_MIRROR_TOPICS:-hektor\\..*}"
MM2_VERSION="${HEKTOR_MM2_VERSION:-4.3.1}"
START_TIMEOUT="${HEKTOR_REGIONS_START_TIMEOUT:-240}"
MM2_STOP_TIMEOUT=30
TOXI_STOP_TIMEOUT=10

# MM2's producer (the local write of every mirrored record), per target cluster;
# HEKTOR_MM2_PRODUCER=connect leaves Connect's defaults (to measure against).
MM2_PRODUCER="${HEKTOR_MM2_PRODUCER:-tuned}"
MM2_BATCH_SIZE=524288
# Across the WAN (at the source) a record leaves at once: requests in flight,
# not linger, batch it under load. Locally (at the target) 5 ms batches more.
MM2_SIDE="${HEKTOR_MM2_SIDE:-source}"
if [[ "$MM2_SIDE" == source ]]; then MM2_LINGER_MS=0; else MM2_LINGER_MS=5; fi
MM2_LINGER_MS="${HEKTOR_MM2_LINGER_MS:-$MM2_LINGER_MS}"
MM2_TASKS="${HEKTOR_MM2_TASKS:-1}"
MM2_IN_FLIGHT=5
# How long Connect holds the tasks of a worker that left its group before it
# hands them out again (its default, 5 minutes, stalled mirroring after a cut).
MM2_REBALANCE_DELAY_MS="${HEKTOR_MM2_REBALANCE_DELAY_MS:-1000}"
# At the source a flow's worker reaches its group across the WAN. A worker that
# cannot reach its coordinator for heartbeat.interval.ms stops its tasks (Connect:
# "Broker coordinator was unreachable ... Revoking previous assignment"), and it
# is 3 s by default: a partition then cost a rejoin and a task restart after the
# heal (task running again 3.4 s after it) and a redelivery of everything since
# the last offset flush. So the worker keeps its tasks through a cut of up to
# 40 s and its membership through 90 s; a worker that died is dropped from its
# group within rebalance.timeout.ms (10 s) when its replacement joins. At the
# target the group is local: Connect's defaults.
if [[ "$MM2_SIDE" == source ]]; then
    MM2_HEARTBEAT_MS="${HEKTOR_MM2_HEARTBEAT_MS:-40000}"
    MM2_SESSION_MS="${HEKTOR_MM2_SESSION_MS:-90000}"
    MM2_REBALANCE_TIMEOUT_MS="${HEKTOR_MM2_REBALANCE_TIMEOUT_MS:-10000}"
else
    MM2_HEARTBEAT_MS="${HEKTOR_MM2_HEARTBEAT_MS:-}"
    MM2_SESSION_MS="${HEKTOR_MM2_SESSION_MS:-}"
    MM2_REBALANCE_TIMEOUT_MS="${HEKTOR_MM2_REBALANCE_TIMEOUT_MS:-}"
fi

if [[ -n "${JAVA:-}" ]]; then
    :
elif [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
else
    JAVA=java
fi

log() { printf 'regions.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- the layout --------------------------------------------------------------

check_layout() {
    ((${#REGIONS[@]} >= 2)) || die "HEKTOR_REGIONS needs at least two regions, not '${REGIONS[*]}'"
    [[ "$MM2_SIDE" == source || "$MM2_SIDE" == target ]] || die "HEKTOR_MM2_SIDE must be source or target, not '$MM2_SIDE'"
    local r seen=" "
    for r in "${REGIONS[@]}"; do
        [[ "$r" =~ ^[a-z][a-z0-9]{0,19}$ ]] ||
            die "region name '$r': lower-case letters and digits, a letter first (it names topics, aliases and variables)"
        [[ "$seen" != *" $r "* ]] || die "region '$r' named twice in HEKTOR_REGIONS"
        [[ "$r" != jars && "$r" != toxiproxy ]] || die "'$r' cannot name a region"
        seen+="$r "
    done
    [[ "$BASE_PORT" =~ ^[0-9]+$ && "$PORT_STEP" =~ ^[0-9]+$ && "$TOXI_PORT" =~ ^[0-9]+$ ]] ||
        die "ports must be numbers"
    ((PORT_STEP >= 81)) || die "HEKTOR_REGIONS_PORT_STEP must be at least 81"
    ((${#REGIONS[@]} <= 10)) || die "at most 10 regions (ports base+70+j must stay below base+80)"
    ((BASE_PORT + PORT_STEP * ${#REGIONS[@]} < 65536)) || die "the ports run past 65535"
    local last=$((BASE_PORT + PORT_STEP * ${#REGIONS[@]}))
    if ((TOXI_PORT >= BASE_PORT && TOXI_PORT < last)); then
        local off=$(((TOXI_PORT - BASE_PORT) % PORT_STEP))
        ((off > 2 && (off < 10 || off >= 10 + ${#REGIONS[@]}) && (off < 50 || off >= 50 + ${#REGIONS[@]}) &&
            (off < 70 || off >= 70 + ${#REGIONS[@]}) && off != 80)) ||
            die "HEKTOR_REGIONS_TOXIPROXY_PORT $TOXI_PORT collides with a region's port"
    fi
}

index_of() {
    local i
    for i in "${!REGIONS[@]}"; do
        if [[ "${REGIONS[$i]}" == "$1" ]]; then
            echo "$i"
            return 0
        fi
    done
    return 1
}

base_port() { echo $((BASE_PORT + PORT_STEP * $(index_of "$1"))); }
broker_port() { base_port "$1"; }
controller_port() { echo $(($(base_port "$1") + 1)); }
sasl_port() { echo $(($(base_port "$1") + 2)); }
# The listener of region $1's broker that region $2's clients use.
listener_port() { echo $(($(base_port "$1") + 10 + $(index_of "$2"))); }
# Where the proxy in front of that listener listens: region $2's way to region
# $1's broker (the address that listener advertises).
proxy_port() { echo $(($(base_port "$1") + 50 + $(index_of "$2"))); }
# Proxy $1_to_$2 carries what crosses from region $1 to region $2: it fronts the
# broker of $2 (MM2 at the source produces into it) or of $1 (MM2 at the target
# fetches from it).
proxy_name() { echo "${1}_to_${2}"; }
proxy_front() { if [[ "$MM2_SIDE" == source ]]; then echo "$2"; else echo "$1"; fi; }
proxy_client() { if [[ "$MM2_SIDE" == source ]]; then echo "$1"; else echo "$2"; fi; }
proxy_listen() { proxy_port "$(proxy_front "$1" "$2")" "$(proxy_client "$1" "$2")"; }
proxy_upstream() { listener_port "$(proxy_front "$1" "$2")" "$(proxy_client "$1" "$2")"; }
# Where region $1's hektor node listens for the other regions (HTTP).
http_port() { echo $(($(base_port "$1") + 80)); }
# Proxy $1_to_$2_http carries region $1's nodes' HTTP calls to region $2's node.
http_proxy_name() { echo "${1}_to_${2}_http"; }
http_proxy_port() { echo $(($(base_port "$1") + 70 + $(index_of "$2"))); }
# Every proxy, one a line: name listen-port upstream-port.
proxy_specs() {
    local a b
    for a in "${REGIONS[@]}"; do
        for b in "${REGIONS[@]}"; do
            [[ "$a" == "$b" ]] && continue
            echo "$(proxy_name "$a" "$b") $(proxy_listen "$a" "$b") $(proxy_upstream "$a" "$b")"
            echo "$(http_proxy_name "$a" "$b") $(http_proxy_port "$a" "$b") $(http_port "$b")"
        done
    done
}
upper() { tr '[:lower:]' '[:upper:]' <<<"$1"; }

region_dir() { echo "$HOME_DIR/$1"; }
kafka_home() { echo "$HOME_DIR/$1/kafka"; }
mm2_dir() { echo "$HOME_DIR/$1/mm2"; }

# The regions that have a directory under .regions (stop and status act on
# whatever was started, whatever HEKTOR_REGIONS says now).
existing_regions() {
    local d
    for d in "$HOME_DIR"/*/; do
        [[ -d "$d" ]] || continue
        d="$(basename "$d")"
        [[ "$d" == jars || "$d" == toxiproxy ]] && continue
        [[ -d "$HOME_DIR/$d/kafka" || -d "$HOME_DIR/$d/mm2" ]] && echo "$d"
    done
}

port_open() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# Pid from a pid file if that process is alive and its command line holds $2.
live_pid() {
    local file="$1" needle="$2" pid cmdline
    [[ -f "$file" ]] || return 1
    pid="$(tr -cd '0-9' <"$file")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *"$needle"* ]] || return 1
    echo "$pid"
}

broker_pid() {
    local home
    home="$(kafka_home "$1")"
    live_pid "$home/kafka.pid" "kafka.Kafka $home/config/server.properties"
}

mm2_pid() {
    local dir
    dir="$(mm2_dir "$1")"
    live_pid "$dir/mm2.pid" "org.apache.kafka.connect.mirror.MirrorMaker $dir/mm2.properties"
}

toxi_pid() {
    live_pid "$TOXI_PID" "-port $TOXI_PORT"
}

# TERM a process, KILL it after $2 seconds.
stop_pid() {
    local pid="$1" limit="$2" what="$3"
    kill -TERM "$pid" 2>/dev/null || return 0
    local deadline=$((SECONDS + limit))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "$what (pid $pid) still alive after ${limit}s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
}

check_java() {
    command -v "$JAVA" >/dev/null 2>&1 || die "java not found; install a JDK 17+ or set JAVA_HOME"
    local version major
    version="$("$JAVA" -version 2>&1 | sed -n '1s/.*version "\([^"]*\)".*/\1/p')"
    major="${version%%.*}"
    if [[ ! "$major" =~ ^[0-9]+$ ]] || ((major < 17)); then
        die "Kafka 4.x and MM2 need Java 17 or newer; $JAVA is '$version'"
    fi
}

# --- jars --------------------------------------------------------------------

# Resolve with Maven (`dependency:copy-dependencies` of POM $1) into $2, once.
resolve() {
    local pom="$1" dest="$2" what="$3"
    shift 3
    [[ -f "$dest/.complete" ]] && return 0
    command -v mvn >/dev/null 2>&1 || die "mvn not found; install Maven to resolve the $what jars"
    log "resolving the $what jars with Maven into $dest (first run only)"
    mkdir -p "$JARS_DIR"
    local tmp="$dest.tmp" mvnlog="$dest.mvn.log"
    rm -rf "$tmp"
    if ! mvn -B -q -f "$pom" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" -DincludeScope=runtime "$@" >"$mvnlog" 2>&1; then
        tail -n 40 "$mvnlog" >&2 || true
        die "Maven could not resolve the $what jars (full log: $mvnlog)"
    fi
    rm -rf "$dest"
    mv "$tmp" "$dest"
}

resolve_jars() {
    local extra=()
    if [[ -n "${HEKTOR_KAFKA_VERSION:-}" ]]; then
        extra+=("-Dkafka.version=$HEKTOR_KAFKA_VERSION")
    fi
    if [[ ! -f "$KAFKA_JARS/.complete" ]]; then
        resolve "$KAFKA_POM" "$KAFKA_JARS" "Kafka broker" "${extra[@]}"
        ls "$KAFKA_JARS"/kafka_2.13-*.jar >/dev/null 2>&1 || die "Maven finished but no kafka_2.13 jar is in $KAFKA_JARS"
        # The marker kafka.sh reads (the version), so it never resolves again.
        basename "$(ls "$KAFKA_JARS"/kafka_2.13-*.jar)" .jar | sed 's/^kafka_2.13-//' >"$KAFKA_JARS/.complete"
    fi
    if [[ ! -f "$MM2_JARS/.complete" ]]; then
        mkdir -p "$JARS_DIR"
        # MirrorMaker 2 on a classpath of its own: connect-mirror brings
        # connect-runtime, kafka-clients and the rest at its own version.
        cat >"$JARS_DIR/mm2-pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/regions.sh: MirrorMaker 2 (dedicated mode) and a log4j2 backend. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>hektor.dev</groupId>
  <artifactId>hektor-mirrormaker</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-mirror</artifactId><version>$MM2_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-mirror-client</artifactId><version>$MM2_VERSION</version></dependency>
    <!-- slf4j 2 wins over the 1.7 API Kafka brings, so log4j2 below is found. -->
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>2.0.17</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version>
  </plugin></plugins></build>
</project>
EOF
        resolve "$JARS_DIR/mm2-pom.xml" "$MM2_JARS" "MirrorMaker 2 $MM2_VERSION"
        ls "$MM2_JARS"/connect-mirror-"$MM2_VERSION".jar "$MM2_JARS"/connect-mirror-client-"$MM2_VERSION".jar >/dev/null 2>&1 ||
            die "Maven finished but connect-mirror $MM2_VERSION is not in $MM2_JARS"
        echo "$MM2_VERSION" >"$MM2_JARS/.complete"
    fi
}

# A region's broker home shares the resolved jars.
prepare_kafka_home() {
    local home
    home="$(kafka_home "$1")"
    mkdir -p "$home"
    if [[ ! -e "$home/libs" ]]; then
        ln -s ../../jars/kafka "$home/libs"
    fi
}

# --- Kafka tools (probes) -------------------------------------------------------

tools_log4j() {
    local f="$JARS_DIR/tools-log4j2.properties"
    if [[ ! -f "$f" ]]; then
        cat >"$f" <<'EOF'
status = warn
name = hektor-regions-tools
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = error
rootLogger.appenderRef.err.ref = STDERR
EOF
    fi
    echo "$f"
}

probe_config() {
    local f="$JARS_DIR/probe.properties"
    if [[ ! -f "$f" ]]; then
        printf '%s\n' request.timeout.ms=3000 default.api.timeout.ms=5000 \
            socket.connection.setup.timeout.ms=1000 socket.connection.setup.timeout.max.ms=2000 >"$f"
    fi
    echo "$f"
}

kafka_tool() {
    local class="$1"
    shift
    "$JAVA" -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
        -Dlog4j2.configurationFile="$(tools_log4j)" \
        -cp "$KAFKA_JARS/*" "$class" "$@"
}

# The end offsets of every `*.heartbeats` topic in region $1, as `topic:partition:offset`
# lines (`A.heartbeats` in B: heartbeats MM2 mirrored from A).
heartbeat_offsets() {
    kafka_tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$HOST:$(broker_port "$1")" \
        --command-config "$(probe_config)" --topic '.*\.heartbeats' --time -1 2>/dev/null
}

# --- Toxiproxy -----------------------------------------------------------------

toxi_answers() {
    curl -fsS --max-time 2 "$TOXI_API/version" >/dev/null 2>&1
}

proxies_json() {
    local name listen upstream sep="" out="["
    while read -r name listen upstream; do
        out+="$sep{\"name\":\"$name\",\"listen\":\"$HOST:$listen\",\"upstream\":\"$HOST:$upstream\",\"enabled\":true}"
        sep=","
    done < <(proxy_specs)
    echo "$out]"
}

start_toxiproxy() {
    mkdir -p "$TOXI_DIR"
    local pid
    if pid="$(toxi_pid)" && toxi_answers; then
        :
    else
        command -v curl >/dev/null 2>&1 || die "curl not found; it drives Toxiproxy's API"
        port_open "$TOXI_PORT" && die "port $TOXI_PORT is in use by another process; choose HEKTOR_REGIONS_TOXIPROXY_PORT"
        local server
        server="$(bash "$TOXIPROXY_SH" install | tail -n1)"
        [[ -x "$server" ]] || die "scripts/toxiproxy.sh install gave no server binary"
        # 9>&-: daemons must not inherit the lock.
        setsid "$server" -host "$HOST" -port "$TOXI_PORT" >>"$TOXI_LOG" 2>&1 </dev/null 9>&- &
        pid=$!
        echo "$pid" >"$TOXI_PID"
        local deadline=$((SECONDS + 20))
        until toxi_answers; do
            kill -0 "$pid" 2>/dev/null || {
                tail -n 20 "$TOXI_LOG" >&2 || true
                die "toxiproxy-server exited during start-up (log: $TOXI_LOG)"
            }
            ((SECONDS < deadline)) || die "toxiproxy-server did not answer on $TOXI_API within 20 s"
            sleep 0.2
        done
        log "toxiproxy-server up (pid $pid), API on $TOXI_API"
    fi
    # Create the proxies that are missing; existing ones (and their toxics) stay. A
    # proxy that listens or forwards elsewhere (started with another HEKTOR_MM2_SIDE)
    # or is disabled goes first: /populate cannot swap two proxies' addresses.
    local out stale
    for stale in $(proxies_not_ready); do
        curl -fsS --max-time 5 -X DELETE "$TOXI_API/proxies/$stale" >/dev/null 2>&1 || true
    done
    out="$(curl -fsS --max-time 10 -X POST -H 'Content-Type: application/json' \
        --data "$(proxies_json)" "$TOXI_API/populate" 2>&1)" || die "creating the proxies failed: $out"
}

# Names of the proxies that are missing or disabled (empty: all fine).
proxies_not_ready() {
    local all name listen upstream
    all="$(curl -fsS --max-time 2 "$TOXI_API/proxies" 2>/dev/null)" || {
        echo "(API down)"
        return 0
    }
    all="$(tr -d ' \n' <<<"$all")"
    while read -r name listen upstream; do
        if [[ "$all" != *"\"name\":\"$name\",\"listen\":\"$HOST:$listen\",\"upstream\":\"$HOST:$upstream\",\"enabled\":true"* ]]; then
            echo "$name"
        fi
    done < <(proxy_specs)
}

# --- brokers ---------------------------------------------------------------------

# Environment for scripts/kafka.sh for region $1.
kafka_env() {
    local r="$1" other listeners=""
    for other in "${REGIONS[@]}"; do
        [[ "$other" == "$r" ]] && continue
        listeners+="${listeners:+ }TO_$(upper "$other")=$(listener_port "$r" "$other")=$HOST:$(proxy_port "$r" "$other")"
    done
    printf '%s\n' "HEKTOR_KAFKA_HOME=$(kafka_home "$r")" \
        "HEKTOR_KAFKA_PORT=$(broker_port "$r")" \
        "HEKTOR_KAFKA_CONTROLLER_PORT=$(controller_port "$r")" \
        "HEKTOR_KAFKA_SASL_PORT=$(sasl_port "$r")" \
        "HEKTOR_KAFKA_EXTRA_LISTENERS=$listeners"
}

run_kafka_sh() {
    local r="$1"
    shift
    local vars=()
    mapfile -t vars < <(kafka_env "$r")
    env -u HEKTOR_KAFKA_EXTRA_PORT -u HEKTOR_KAFKA_EXTRA_ADVERTISED "${vars[@]}" bash "$KAFKA_SH" "$@"
}

start_brokers() {
    local r pids=() names=() failed=()
    local other props
    for r in "${REGIONS[@]}"; do
        if broker_pid "$r" >/dev/null && port_open "$(broker_port "$r")"; then
            # It must have a listener for every other region (HEKTOR_REGIONS may
            # have changed since it started).
            props="$(kafka_home "$r")/config/server.properties"
            for other in "${REGIONS[@]}"; do
                [[ "$other" == "$r" ]] && continue
                grep -q "TO_$(upper "$other")://$HOST:$(proxy_port "$r" "$other")" "$props" ||
                    die "region $r's broker runs without a listener for $other (started with other regions or ports?); run: $0 stop"
            done
            continue
        fi
        prepare_kafka_home "$r"
        log "starting region $r's broker on $HOST:$(broker_port "$r") (log: $(region_dir "$r")/kafka-start.log)"
        run_kafka_sh "$r" start >"$(region_dir "$r")/kafka-start.log" 2>&1 9>&- &
        pids+=("$!")
        names+=("$r")
    done
    local i
    for i in "${!pids[@]}"; do
        if ! wait "${pids[$i]}"; then
            failed+=("${names[$i]}")
        fi
    done
    for r in "${failed[@]}"; do
        log "region $r's broker did not start; last lines of $(region_dir "$r")/kafka-start.log:"
        tail -n 25 "$(region_dir "$r")/kafka-start.log" >&2 || true
    done
    ((${#failed[@]} == 0)) || die "broker(s) of ${failed[*]} did not start"
}

# --- MirrorMaker 2 -----------------------------------------------------------------

# A value for a Java properties file (backslashes doubled).
prop_value() {
    printf '%s' "${1//\\/\\\\}"
}

# The target clusters of region $1's MM2 (its --clusters), one a line: every other
# region when it lives at the source, itself at the target.
mm2_targets() {
    local r="$1" other
    if [[ "$MM2_SIDE" == target ]]; then
        echo "$r"
        return 0
    fi
    for other in "${REGIONS[@]}"; do
        if [[ "$other" != "$r" ]]; then echo "$other"; fi
    done
}

# MM2 of region $1: at the source it mirrors its own region out (consumes its broker,
# produces to every other region through a proxy); at the target it mirrors every
# other region in (consumes through a proxy, produces locally).
write_mm2_config() {
    local r="$1" dir other clusters t targets
    dir="$(mm2_dir "$r")"
    mkdir -p "$dir"
    clusters="$(
        IFS=,
        echo "${REGIONS[*]}"
    )"
    mapfile -t targets < <(mm2_targets "$r")
    {
        echo "# Written by scripts/regions.sh on every start; edit the script, not this file."
        if [[ "$MM2_SIDE" == source ]]; then
            cat <<EOF
# MirrorMaker 2 of region $r at the source (run with --clusters ${targets[*]}): every
# flow $r->X reads $r's broker locally and writes to region X through Toxiproxy
# (proxy ${r}_to_X); X's cluster also holds the flow's Connect worker group.
EOF
        else
            cat <<EOF
# MirrorMaker 2 of region $r at the target (run with --clusters $r): every flow
# X->$r reads region X through Toxiproxy (proxy X_to_$r) and writes to $r's broker
# locally.
EOF
        fi
        cat <<EOF
clusters = $clusters
$r.bootstrap.servers = $HOST:$(broker_port "$r")
EOF
        for other in "${REGIONS[@]}"; do
            [[ "$other" == "$r" ]] && continue
            if [[ "$MM2_SIDE" == source ]]; then
                cat <<EOF
# region $other, reached through proxy $(proxy_name "$r" "$other")
$other.bootstrap.servers = $HOST:$(proxy_port "$other" "$r")
$r->$other.enabled = true
EOF
            else
                cat <<EOF
# region $other, reached through proxy $(proxy_name "$other" "$r")
$other.bootstrap.servers = $HOST:$(proxy_port "$other" "$r")
$other->$r.enabled = true
# Fetches cross the WAN: larger per-partition fetches; the OS's (autotuned)
# socket buffer instead of Java's 64 KiB, which caps a real long-RTT link;
# never mirror what a transaction aborted.
$other.consumer.max.partition.fetch.bytes = 4194304
$other.consumer.receive.buffer.bytes = -1
$other.consumer.isolation.level = read_committed
EOF
            fi
        done
        if [[ "$MM2_SIDE" == source ]]; then
            cat <<EOF
# The local consumer: never mirror what a transaction aborted.
$r.consumer.isolation.level = read_committed
EOF
        fi
        cat <<EOF

# What to mirror, and how often to look for new topics and topic configs.
topics = $(prop_value "$MIRROR_TOPICS")
tasks.max = $MM2_TASKS
replication.policy.class = org.apache.kafka.connect.mirror.DefaultReplicationPolicy
refresh.topics.interval.seconds = 5
sync.topic.configs.enabled = true
sync.topic.configs.interval.seconds = 10
sync.topic.acls.enabled = false
replication.factor = 1
# Heartbeats (region B's A.heartbeats says A -> B is alive); no checkpoints and
# no offset syncs: hektor has no consumer groups to translate.
emit.heartbeats.enabled = true
emit.heartbeats.interval.seconds = 1
heartbeats.topic.replication.factor = 1
emit.checkpoints.enabled = false
emit.offset-syncs.enabled = false
sync.group.offsets.enabled = false

# Connect's internal topics (taken at the top level), in each flow's target cluster.
offset.storage.replication.factor = 1
offset.storage.partitions = 5
config.storage.replication.factor = 1
status.storage.replication.factor = 1
status.storage.partitions = 1
task.shutdown.graceful.timeout.ms = 5000

# Worker settings: dedicated mode ignores them at the top level, so they are
# given per cluster alias (a flow's herder takes its target's).
plugin.discovery = service_load
EOF
        for t in "${targets[@]}"; do
            cat <<EOF
$t.plugin.discovery = service_load
$t.scheduled.rebalance.max.delay.ms = $MM2_REBALANCE_DELAY_MS
$t.offset.flush.interval.ms = 5000
EOF
            if [[ -n "$MM2_HEARTBEAT_MS" ]]; then echo "$t.heartbeat.interval.ms = $MM2_HEARTBEAT_MS"; fi
            if [[ -n "$MM2_SESSION_MS" ]]; then echo "$t.session.timeout.ms = $MM2_SESSION_MS"; fi
            if [[ -n "$MM2_REBALANCE_TIMEOUT_MS" ]]; then echo "$t.rebalance.timeout.ms = $MM2_REBALANCE_TIMEOUT_MS"; fi
        done
        if [[ "$MM2_PRODUCER" == tuned ]]; then
            echo "# The producer of the mirrored records (Connect's default: 1 in flight, 16 KiB)."
            for t in "${targets[@]}"; do
                cat <<EOF
$t.producer.batch.size = $MM2_BATCH_SIZE
$t.producer.linger.ms = $MM2_LINGER_MS
$t.producer.max.in.flight.requests.per.connection = $MM2_IN_FLIGHT
$t.producer.enable.idempotence = true
$t.producer.acks = all
$t.producer.compression.type = lz4
$t.producer.buffer.memory = 67108864
EOF
                if [[ "$MM2_SIDE" == source ]]; then
                    echo "# Produce requests cross the WAN: the OS's (autotuned) socket buffer."
                    echo "$t.producer.send.buffer.bytes = -1"
                fi
            done
        fi
    } >"$dir/mm2.properties.new"
    cat >"$dir/log4j2.properties" <<EOF
status = warn
name = hektor-mm2-$r
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $dir/mm2.log
appender.file.filePattern = $dir/mm2.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
logger.reflections.name = org.reflections
logger.reflections.level = error
EOF
}

# Start region $1's MM2 unless it runs with the same config; 0 if it was started.
start_mm2() {
    local r="$1" dir pid targets
    dir="$(mm2_dir "$r")"
    mapfile -t targets < <(mm2_targets "$r")
    write_mm2_config "$r"
    if pid="$(mm2_pid "$r")"; then
        if cmp -s "$dir/mm2.properties.new" "$dir/mm2.properties"; then
            rm -f "$dir/mm2.properties.new"
            return 1
        fi
        log "region $r's MM2 runs with another config; restarting it"
        stop_pid "$pid" "$MM2_STOP_TIMEOUT" "MM2 of $r"
    fi
    mv "$dir/mm2.properties.new" "$dir/mm2.properties"
    # A fresh log per start, so the checks below read this run's lines only.
    rm -f "$dir/mm2.log" "$dir"/mm2.log.*
    log "starting region $r's MirrorMaker 2 (log: $dir/mm2.log)"
    setsid "$JAVA" -Xms128m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -cp "$MM2_JARS/*" org.apache.kafka.connect.mirror.MirrorMaker "$dir/mm2.properties" \
        --clusters "${targets[@]}" >>"$dir/mm2.out" 2>&1 </dev/null 9>&- &
    echo "$!" >"$dir/mm2.pid"
    return 0
}

# The value of `key = value` in the first "<block> values:" block of region $1's
# MM2 log whose client.id matches $3 (empty until such a block is logged).
mm2_logged_setting() {
    local log
    log="$(mm2_dir "$1")/mm2.log"
    [[ -f "$log" ]] || return 0
    awk -v block="$2 values:" -v client="$3" -v key="$4" '
        index($0, block) { inblock = 1; delete v; next }
        inblock && /^\t/ { line = $0; sub(/^\t/, "", line); split(line, kv, " = "); v[kv[1]] = kv[2]; next }
        inblock { inblock = 0; if (v["client.id"] ~ client) { print v[key]; exit } }
    ' "$log"
}

# The source task's producer (it writes the mirrored records), as logged.
mm2_producer_setting() {
    mm2_logged_setting "$1" ProducerConfig '^connector-producer-MirrorSourceConnector-' "$2"
}

# A Connect worker setting of region $1's MM2 (the first herder's), as logged.
mm2_worker_setting() {
    mm2_logged_setting "$1" DistributedConfig '' "$2"
}

# Check in region $1's MM2 log that its worker and its source task's producer run
# with our settings (dedicated mode drops misplaced ones without a word).
check_mm2_settings() {
    local r="$1" k want got bad=""
    local worker=("scheduled.rebalance.max.delay.ms=$MM2_REBALANCE_DELAY_MS" offset.flush.interval.ms=5000 plugin.discovery=service_load)
    if [[ -n "$MM2_HEARTBEAT_MS" ]]; then worker+=("heartbeat.interval.ms=$MM2_HEARTBEAT_MS"); fi
    if [[ -n "$MM2_SESSION_MS" ]]; then worker+=("session.timeout.ms=$MM2_SESSION_MS"); fi
    if [[ -n "$MM2_REBALANCE_TIMEOUT_MS" ]]; then worker+=("rebalance.timeout.ms=$MM2_REBALANCE_TIMEOUT_MS"); fi
    for k in "${worker[@]}"; do
        want="${k#*=}"
        got="$(mm2_worker_setting "$r" "${k%%=*}")"
        [[ "$got" == "$want" ]] || bad+=" worker ${k%%=*}=${got:-?} (want $want)"
    done
    if [[ "$MM2_PRODUCER" != tuned ]]; then
        # Connect's defaults: only wait until the producer exists.
        [[ -n "$(mm2_producer_setting "$r" batch.size)" ]] || bad+=" (no source task producer yet)"
    else
        for k in "batch.size=$MM2_BATCH_SIZE" "linger.ms=$MM2_LINGER_MS" \
            "max.in.flight.requests.per.connection=$MM2_IN_FLIGHT" "enable.idempotence=true" "acks=-1"; do
            want="${k#*=}"
            got="$(mm2_producer_setting "$r" "${k%%=*}")"
            [[ "$got" == "$want" ]] || bad+=" producer ${k%%=*}=${got:-?} (want $want)"
        done
    fi
    if [[ -n "$bad" ]]; then
        echo "$bad"
        return 1
    fi
}

# --- readiness -----------------------------------------------------------------------

# Sum of the end offsets of topic $2 in lines $1 (`topic:partition:offset`); -1 if absent.
end_offset() {
    awk -F: -v t="$2" 'BEGIN { s = -1 } $1 == t { if (s < 0) s = 0; s += $3 } END { print s }' <<<"$1"
}

# Wait until heartbeats cross every ordered pair of regions (an end offset of
# A.heartbeats in B that grows while we watch), every MM2 is alive and its
# source task's producer has our settings.
wait_mirroring() {
    local deadline=$((SECONDS + START_TIMEOUT))
    declare -A first=()
    local a b offsets n pending
    while :; do
        pending=()
        for b in "${REGIONS[@]}"; do
            mm2_pid "$b" >/dev/null || {
                log "region $b's MM2 exited; last lines of its log:"
                tail -n 30 "$(mm2_dir "$b")/mm2.log" "$(mm2_dir "$b")/mm2.out" >&2 2>/dev/null || true
                die "MirrorMaker 2 of region $b did not start"
            }
            offsets="$(heartbeat_offsets "$b" || true)"
            for a in "${REGIONS[@]}"; do
                [[ "$a" == "$b" ]] && continue
                n="$(end_offset "$offsets" "$a.heartbeats")"
                if [[ -z "${first["$a:$b"]:-}" ]]; then
                    first["$a:$b"]="$n"
                    pending+=("$a->$b")
                elif ((n <= ${first["$a:$b"]})); then
                    pending+=("$a->$b")
                fi
            done
        done
        ((${#pending[@]} == 0)) && break
        if ((SECONDS >= deadline)); then
            for b in "${REGIONS[@]}"; do
                log "last lines of region $b's MM2 log:"
                grep -E ' (WARN|ERROR) ' "$(mm2_dir "$b")/mm2.log" 2>/dev/null | tail -n 10 >&2 || true
            done
            log "proxies not ready: $(proxies_not_ready | tr '\n' ' ')"
            die "no heartbeats crossed ${pending[*]} within ${START_TIMEOUT}s (a toxic left on a proxy? try: $0 reset)"
        fi
        sleep 1
    done
    local bad
    for b in "${REGIONS[@]}"; do
        until bad="$(check_mm2_settings "$b")"; do
            ((SECONDS < deadline)) || die "region $b's MM2 does not run with our settings:$bad (see $(mm2_dir "$b")/mm2.log)"
            sleep 1
        done
    done
}

# --- commands ------------------------------------------------------------------------

lock() {
    mkdir -p "$HOME_DIR"
    exec 9>"$LOCK_FILE"
    flock -w 600 9 || die "another scripts/regions.sh holds $LOCK_FILE"
}

cmd_start() {
    check_layout
    lock
    local t0=$SECONDS
    check_java
    resolve_jars
    local r
    for r in "${REGIONS[@]}"; do
        mkdir -p "$(region_dir "$r")"
        prepare_kafka_home "$r"
    done
    start_toxiproxy
    start_brokers
    local started=()
    for r in "${REGIONS[@]}"; do
        if start_mm2 "$r"; then started+=("$r"); fi
    done
    wait_mirroring
    for r in "${REGIONS[@]}"; do
        log "region $r: broker $HOST:$(broker_port "$r") (pid $(broker_pid "$r")), MM2 pid $(mm2_pid "$r"): producer batch.size=$(mm2_producer_setting "$r" batch.size) linger.ms=$(mm2_producer_setting "$r" linger.ms) max.in.flight=$(mm2_producer_setting "$r" max.in.flight.requests.per.connection) idempotence=$(mm2_producer_setting "$r" enable.idempotence), worker scheduled.rebalance.max.delay.ms=$(mm2_worker_setting "$r" scheduled.rebalance.max.delay.ms) (from its log)"
    done
    log "setup up in $((SECONDS - t0))s${started:+ (started MM2 of ${started[*]})}: heartbeats cross every pair of ${REGIONS[*]}"
    cmd_env
}

cmd_stop() {
    lock
    local wipe=0
    if [[ "${1:-}" == --wipe ]]; then
        wipe=1
    elif [[ -n "${1:-}" ]]; then
        die "usage: $0 stop [--wipe]"
    fi
    local regions r pid pids=()
    mapfile -t regions < <(existing_regions)
    # MM2 first (nothing left to mirror into a stopped broker), in parallel.
    for r in "${regions[@]}"; do
        if pid="$(live_pid "$(mm2_dir "$r")/mm2.pid" "org.apache.kafka.connect.mirror.MirrorMaker $(mm2_dir "$r")/mm2.properties")"; then
            log "stopping region $r's MM2 (pid $pid)"
            stop_pid "$pid" "$MM2_STOP_TIMEOUT" "MM2 of $r" &
            pids+=("$!")
        fi
        rm -f "$(mm2_dir "$r")/mm2.pid"
    done
    for pid in "${pids[@]}"; do wait "$pid" || true; done
    # Any Toxiproxy server this script started, whatever its port.
    if [[ -f "$TOXI_PID" ]]; then
        pid="$(tr -cd '0-9' <"$TOXI_PID")"
        if [[ -n "$pid" ]] && live_pid "$TOXI_PID" "toxiproxy-server" >/dev/null; then
            log "stopping toxiproxy-server (pid $pid)"
            stop_pid "$pid" "$TOXI_STOP_TIMEOUT" "toxiproxy-server"
        fi
        rm -f "$TOXI_PID"
    fi
    pids=()
    for r in "${regions[@]}"; do
        [[ -f "$(kafka_home "$r")/kafka.pid" ]] || continue
        HEKTOR_KAFKA_HOME="$(kafka_home "$r")" bash "$KAFKA_SH" stop >>"$(region_dir "$r")/kafka-stop.log" 2>&1 &
        pids+=("$!")
        log "stopping region $r's broker"
    done
    for pid in "${pids[@]}"; do wait "$pid" || true; done
    if ((wipe)); then
        for r in "${regions[@]}"; do rm -rf "${HOME_DIR:?}/$r"; done
        rm -rf "$TOXI_DIR"
        log "wiped ${regions[*]:-nothing} and $TOXI_DIR (the jars in $JARS_DIR stay)"
    fi
    log "stopped"
}

cmd_status() {
    check_layout
    local ok=0 r pid missing
    for r in "${REGIONS[@]}"; do
        if pid="$(broker_pid "$r")" && port_open "$(broker_port "$r")"; then
            log "region $r: broker up (pid $pid) on $HOST:$(broker_port "$r")"
        else
            log "region $r: broker DOWN"
            ok=1
        fi
        if pid="$(mm2_pid "$r")"; then
            log "region $r: MM2 up (pid $pid)"
        else
            log "region $r: MM2 DOWN"
            ok=1
        fi
    done
    if toxi_pid >/dev/null && toxi_answers; then
        missing="$(proxies_not_ready | tr '\n' ' ')"
        if [[ -n "$missing" ]]; then
            log "toxiproxy up on $TOXI_API; proxies missing or disabled: $missing"
            ok=1
        else
            log "toxiproxy up on $TOXI_API with every proxy enabled"
        fi
    else
        log "toxiproxy DOWN"
        ok=1
    fi
    return "$ok"
}

cmd_env() {
    check_layout
    local r a b var peers
    printf 'export HEKTOR_REGIONS=%q\n' "${REGIONS[*]}"
    for r in "${REGIONS[@]}"; do
        echo "export HEKTOR_REGION_$(upper "$r")_BROKERS=$HOST:$(broker_port "$r")"
    done
    for r in "${REGIONS[@]}"; do
        echo "export HEKTOR_REGION_$(upper "$r")_HTTP=$HOST:$(http_port "$r")"
        peers=""
        for b in "${REGIONS[@]}"; do
            [[ "$b" == "$r" ]] && continue
            peers+="${peers:+,}$b=http://$HOST:$(http_proxy_port "$r" "$b")"
        done
        echo "export HEKTOR_REGION_$(upper "$r")_PEERS=$peers"
    done
    echo "export HEKTOR_TOXIPROXY=$TOXI_API"
    echo "export HEKTOR_MM2_SIDE=$MM2_SIDE"
    for a in "${REGIONS[@]}"; do
        for b in "${REGIONS[@]}"; do
            [[ "$a" == "$b" ]] && continue
            var="HEKTOR_PROXY_$(upper "$a")_TO_$(upper "$b")"
            echo "export $var=$(proxy_name "$a" "$b")"
            echo "export ${var}_ADDR=$HOST:$(proxy_listen "$a" "$b")"
            echo "export ${var}_HTTP=$(http_proxy_name "$a" "$b")"
            echo "export ${var}_HTTP_ADDR=$HOST:$(http_proxy_port "$a" "$b")"
        done
    done
}

cmd_reset() {
    check_layout
    curl -fsS --max-time 5 -X POST "$TOXI_API/reset" >/dev/null || die "Toxiproxy at $TOXI_API did not answer"
    log "removed every toxic and enabled every proxy on $TOXI_API"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop "${2:-}" ;;
status) cmd_status ;;
env) cmd_env ;;
reset) cmd_reset ;;
*)
    echo "usage: $0 start|stop [--wipe]|status|env|reset" >&2
    exit 2
    ;;
esac
