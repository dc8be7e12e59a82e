#!/usr/bin/env bash
# kprobe's local scale-out stack: Kafka 4.x (KRaft), Neo4j 5.26 (embedded + Bolt) and ClickHouse
# (Debian's 18.16), each a plain background process on 127.0.0.1. There is no Docker engine and
# no download site here, so the JVM servers come from Maven Central jars and ClickHouse from apt.
#
#   deploy/stack.sh start  [kafka|neo4j|clickhouse|all]   start (no-op for what already runs)
#   deploy/stack.sh stop   [kafka|neo4j|clickhouse|all]   stop (no-op for what is stopped)
#   deploy/stack.sh status [kafka|neo4j|clickhouse|all]   exit 0 only if all named are running
#   deploy/stack.sh setup  [kafka|neo4j|clickhouse|all]   only fetch/compile/install, start nothing
#   deploy/stack.sh clean  [kafka|neo4j|clickhouse|all]   stop, then delete the stored data (topics,
#                                                          graph, tables); jars and config stay
#
# Everything (jars, Maven repository, data, logs, pid files, stack.env) lives in deploy/.cache/.
# Environment overrides: KPROBE_STACK_CACHE, KPROBE_M2_REPO (share ~/.m2 between checkouts),
# KPROBE_STACK_TIMEOUT (seconds to wait for each server, default 180), KPROBE_JAVA_HOME (Neo4j's
# JDK), KPROBE_KAFKA_JAVA_HOME (the broker's; default the newest JDK 17+), KPROBE_KAFKA_JVM_OPTS
# (extra broker JVM flags), KPROBE_CLICKHOUSE_DATA (tmpfs, the default; disk; or a directory: see
# clickhouse_data_dir below), KPROBE_PORT_OFFSET (added to every port below; default 0),
# KPROBE_STACK_FRESH=1 (a Kafka that is not running starts with an empty log directory: what the
# tests use).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${KPROBE_STACK_CACHE:-$HERE/.cache}"
M2_REPO="${KPROBE_M2_REPO:-$CACHE/m2}"
TIMEOUT="${KPROBE_STACK_TIMEOUT:-180}"
HOST=127.0.0.1

# KPROBE_PORT_OFFSET shifts every port, so two checkouts can run their own stacks side by side.
PORT_OFFSET="${KPROBE_PORT_OFFSET:-0}"
KAFKA_PORT=$((9092 + PORT_OFFSET))
KAFKA_CONTROLLER_PORT=$((9093 + PORT_OFFSET))
NEO4J_BOLT_PORT=$((7687 + PORT_OFFSET))
CH_TCP_PORT=$((19000 + PORT_OFFSET))
CH_HTTP_PORT=$((18123 + PORT_OFFSET))

# The broker's JVM, tuned for a small shared host (the 2-vCPU VM this stack serves), each measured
# with bench/e2e.py (2M-event storms through agent -> Kafka -> ingest -> ClickHouse):
# * 16 MiB G1 regions: a produce request carrying the agent's ~3 MB batches is an ordinary young
#   allocation; with the 1 MiB default each was "humongous" (old generation) and the broker ran a
#   concurrent marking cycle every second or so of load (98 in 2 minutes; GC threads 0.57 CPU-s
#   per storm, then 0.08).
# * C1 only (TieredStopAtLevel=1): C2 kept recompiling after any number of warm-up storms
#   (deoptimised metrics and log code), 0.2-0.8 CPU-s per storm, on the same 2 CPUs as the
#   pipeline; request handling is memory copies, CRC32C and sendfile, no faster under C2. Broker
#   CPU per event 0.49-0.57 us -> 0.26-0.29 us. A broker on its own many-core node can drop it
#   (KPROBE_KAFKA_JVM_OPTS=-XX:TieredStopAtLevel=4).
KAFKA_JVM_FLAGS="-Xms1g -Xmx1g -XX:G1HeapRegionSize=16m -XX:TieredStopAtLevel=1"
NEO4J_HEAP="-Xms256m -Xmx768m"
NEO4J_PAGECACHE_MIB=256

SERVICES=(kafka neo4j clickhouse)

say() { printf '[stack] %s\n' "$*"; }
err() { printf '[stack] ERROR: %s\n' "$*" >&2; }
die() { err "$*"; exit 1; }

usage() {
    sed -n '6,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
}

# ---------------------------------------------------------------- helpers

# The JDK to run both JVM servers: Kafka 4.x and Neo4j 5.26 both want Java 17 (or newer).
find_java_home() {
    local cand major
    for cand in "${KPROBE_JAVA_HOME:-}" /usr/lib/jvm/java-17-openjdk-amd64 "${JAVA_HOME:-}" \
        /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/*; do
        [[ -n "$cand" && -x "$cand/bin/java" && -x "$cand/bin/javac" ]] || continue
        major="$("$cand/bin/java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
        if [[ -n "$major" && "$major" -ge 17 ]]; then
            echo "$cand"
            return 0
        fi
    done
    return 1
}

# The broker's JDK: the newest one installed (17+; Kafka 4.x runs on 17 to 25). Measured with
# bench/e2e.py, both with C2: broker CPU per event 0.77-0.78 us on 17, 0.49-0.57 us on 25.
find_kafka_java_home() {
    local cand major best="" best_major=0
    if [[ -n "${KPROBE_KAFKA_JAVA_HOME:-}" ]]; then
        [[ -x "$KPROBE_KAFKA_JAVA_HOME/bin/java" ]] || return 1
        echo "$KPROBE_KAFKA_JAVA_HOME"
        return 0
    fi
    for cand in /usr/lib/jvm/* "$JAVA_HOME"; do
        [[ -x "$cand/bin/java" && ! -L "$cand" ]] || continue
        major="$("$cand/bin/java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
        if [[ -n "$major" && "$major" -ge 17 && "$major" -gt "$best_major" ]]; then
            best="$cand" best_major="$major"
        fi
    done
    [[ -n "$best" ]] && echo "$best"
}

svc_dir() { echo "$CACHE/$1"; }
pid_file() { echo "$CACHE/$1/pid"; }
log_file() { echo "$CACHE/$1/server.log"; }

svc_port() {
    case "$1" in
        kafka) echo "$KAFKA_PORT" ;;
        neo4j) echo "$NEO4J_BOLT_PORT" ;;
        clickhouse) echo "$CH_TCP_PORT" ;;
    esac
}

# The pid we recorded, if that process is still alive.
running_pid() {
    local f pid
    f="$(pid_file "$1")"
    [[ -f "$f" ]] || return 1
    pid="$(cat "$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    # A recycled pid belongs to someone else: ours all name the cache folder on their command line.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$CACHE" || return 1
    echo "$pid"
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

show_log_tail() {
    local log="$1"
    if [[ -f "$log" ]]; then
        err "last 40 lines of $log:"
        tail -n 40 "$log" | sed 's/^/    /' >&2
    fi
}

# Waits until `check` succeeds; fails early (with the log) if the process died.
wait_ready() {
    local svc="$1" pid="$2" check="$3" log="$4" started=$SECONDS
    while ! "$check"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$(pid_file "$svc")"
            show_log_tail "$log"
            die "$svc exited during start-up"
        fi
        if ((SECONDS - started >= TIMEOUT)); then
            show_log_tail "$log"
            err "$svc did not accept connections within ${TIMEOUT}s: stopping it (KPROBE_STACK_TIMEOUT raises the limit)"
            terminate "$svc" "$pid"
            exit 1
        fi
        sleep 0.5
    done
}

# Starts a command as its own session (so stop can signal the whole group) and records its pid.
# A server keeps none of the caller's descriptors: an inherited lock would stay held and an
# inherited pipe would never reach EOF for as long as the server runs.
close_inherited_fds() {
    local fd
    for fd in /proc/$BASHPID/fd/*; do
        fd="${fd##*/}"
        if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
}

spawn() {
    local svc="$1" log
    shift
    log="$(log_file "$svc")"
    : >"$log"
    (close_inherited_fds; exec setsid "$@") >>"$log" 2>&1 </dev/null &
    echo $! >"$(pid_file "$svc")"
    echo $!
}

# Maven resolve with checksum verification into a fresh folder, swapped in only on success, and
# skipped while the pom is unchanged since the last successful fetch.
fetch_jars() {
    local pom="$1" dest="$2" stamp sum tmp
    stamp="$dest/.pom.sha256"
    sum="$(sha256sum "$pom" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$sum" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (apt-get install -y maven)"
    say "fetching jars for $(basename "$(dirname "$pom")") from Maven Central (checksums enforced)..."
    tmp="$dest.tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    local started=$SECONDS
    if ! JAVA_HOME="$JAVA_HOME" mvn -q -B -C -Dmaven.repo.local="$M2_REPO" -f "$pom" \
        dependency:copy-dependencies -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
        tail -n 40 "$tmp.log" >&2
        die "maven could not resolve $pom"
    fi
    rm -rf "$dest"
    mv "$tmp" "$dest"
    rm -f "$tmp.log"
    echo "$sum" >"$stamp"
    say "  $(find "$dest" -name '*.jar' | wc -l) jars, $(du -sh "$dest" | cut -f1) in $((SECONDS - started))s"
}

render() {  # render TEMPLATE OUT KEY=VALUE...
    local tmpl="$1" out="$2" expr=() kv
    shift 2
    for kv in "$@"; do
        expr+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
    done
    sed "${expr[@]}" "$tmpl" >"$out"
}

# ---------------------------------------------------------------- kafka

setup_kafka() {
    local dir
    dir="$(svc_dir kafka)"
    mkdir -p "$dir/data"
    fetch_jars "$HERE/kafka/pom.xml" "$dir/libs"
    render "$HERE/kafka/server.properties.in" "$dir/server.properties" \
        HOST="$HOST" PORT="$KAFKA_PORT" CONTROLLER_PORT="$KAFKA_CONTROLLER_PORT" DATA="$dir/data"
    cp "$HERE/kafka/log4j2.properties" "$dir/log4j2.properties"
}

# The broker and its tools share one JVM command line (a function cannot be run under setsid).
kafka_java_cmd() {
    local dir
    dir="$(svc_dir kafka)"
    # shellcheck disable=SC2206  # the flag lists are meant to split
    KAFKA_JAVA=("$KAFKA_JAVA_HOME/bin/java" $KAFKA_JVM_FLAGS -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties" ${KPROBE_KAFKA_JVM_OPTS:-}
        -cp "$dir/libs/*")
}

# KRaft needs its log directory formatted once with a cluster id before the first start.
format_kafka() {
    local dir id
    dir="$(svc_dir kafka)"
    [[ -f "$dir/data/meta.properties" ]] && return 0
    kafka_java_cmd
    id="$("${KAFKA_JAVA[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    [[ -n "$id" ]] || die "kafka StorageTool random-uuid failed"
    say "formatting kafka storage (cluster id $id)"
    if ! "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" \
        >"$dir/format.log" 2>&1; then
        tail -n 40 "$dir/format.log" >&2
        die "kafka storage format failed"
    fi
}

kafka_ready() {
    port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$(log_file kafka)"
}

start_kafka() {
    if [[ "${KPROBE_STACK_FRESH:-0}" == 1 ]]; then
        # tests create topics under random prefixes and never reuse them: a broker that kept them all
        # loads thousands of partitions at every start (minutes on 2 cores), so test runs start empty
        say "KPROBE_STACK_FRESH=1: kafka starts with an empty log directory"
        rm -rf "$(svc_dir kafka)/data"
    fi
    setup_kafka
    format_kafka
    kafka_java_cmd
    say "kafka runs on $("$KAFKA_JAVA_HOME/bin/java" -version 2>&1 | head -1) ($KAFKA_JAVA_HOME)"
    spawn kafka "${KAFKA_JAVA[@]}" kafka.Kafka "$(svc_dir kafka)/server.properties" >/dev/null
}

# ---------------------------------------------------------------- neo4j

setup_neo4j() {
    local dir src classes
    dir="$(svc_dir neo4j)"
    src="$HERE/neo4j/src/kprobe/deploy/Neo4jLauncher.java"
    classes="$dir/classes"
    mkdir -p "$dir/home"
    fetch_jars "$HERE/neo4j/pom.xml" "$dir/libs"
    if [[ ! -f "$classes/kprobe/deploy/Neo4jLauncher.class" || "$src" -nt "$classes/kprobe/deploy/Neo4jLauncher.class" \
        || "$dir/libs/.pom.sha256" -nt "$classes/kprobe/deploy/Neo4jLauncher.class" ]]; then
        say "compiling the Neo4j launcher"
        rm -rf "$classes"
        mkdir -p "$classes"
        "$JAVA_HOME/bin/javac" -nowarn --release 17 -cp "$dir/libs/*" -d "$classes" "$src" ||
            die "javac failed for $src"
    fi
}

neo4j_ready() {
    port_open "$NEO4J_BOLT_PORT" && grep -q "kprobe-neo4j: ready" "$(log_file neo4j)"
}

start_neo4j() {
    local dir
    setup_neo4j
    dir="$(svc_dir neo4j)"
    # The --add-opens list is the one Neo4j's own launcher passes on Java 17+.
    spawn neo4j "$JAVA_HOME/bin/java" $NEO4J_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
        -Djdk.nio.maxCachedBufferSize=1024 -Dio.netty.tryReflectionSetAccessible=true \
        --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED \
        --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang=ALL-UNNAMED \
        --enable-native-access=ALL-UNNAMED \
        -cp "$dir/classes:$dir/libs/*" kprobe.deploy.Neo4jLauncher \
        "$dir/home" "$HOST" "$NEO4J_BOLT_PORT" "$NEO4J_PAGECACHE_MIB" >/dev/null
}

# ---------------------------------------------------------------- clickhouse

# Where the local ClickHouse keeps its tables. This stack serves tests and benchmarks, so by
# default in RAM (/dev/shm, one directory per cache and port offset; gone at reboot, like the
# tests' data). Why not the disk: this kind of VM's root filesystem is ext4 *without a journal*,
# and such an ext4 checks the inode table for recently deleted inodes at every file creation.
# ClickHouse 18.16 writes two files per column per part (~45 for a kprobe table) and deletes as
# many at each merge: perf showed half the server's CPU in that ext4 path (find_inode_bit,
# recently_deleted) during the e2e bench. A production server sits on a journaled ext4 or xfs,
# where that path is not taken. KPROBE_CLICKHOUSE_DATA=disk keeps the data under deploy/.cache;
# any other value is used as the directory.
clickhouse_data_dir() {
    local choice="${KPROBE_CLICKHOUSE_DATA:-tmpfs}" tag
    case "$choice" in
        disk) echo "$(svc_dir clickhouse)/data" ;;
        tmpfs)
            if [[ -d /dev/shm && -w /dev/shm ]] && [[ "$(stat -f -c %T /dev/shm)" == tmpfs ]]; then
                tag="$(printf '%s:%s' "$CACHE" "$PORT_OFFSET" | md5sum | cut -c1-8)"
                echo "/dev/shm/kprobe-stack-$tag/clickhouse-data"
            else
                echo "$(svc_dir clickhouse)/data"
            fi
            ;;
        *) echo "$choice" ;;
    esac
}

setup_clickhouse() {
    local dir d data
    if ! command -v clickhouse-server >/dev/null || ! command -v clickhouse-client >/dev/null; then
        [[ "$(id -u)" == 0 ]] || die "clickhouse-server missing: run 'apt-get install -y clickhouse-server clickhouse-client' as root"
        say "installing Debian's clickhouse-server and clickhouse-client (apt-get)..."
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            clickhouse-server clickhouse-client; } >"$CACHE/apt-clickhouse.log" 2>&1 ||
            { tail -n 30 "$CACHE/apt-clickhouse.log" >&2; die "apt-get install clickhouse-server failed"; }
    fi
    dir="$(svc_dir clickhouse)"
    for d in tmp user_files format_schemas log; do
        mkdir -p "$dir/$d"
    done
    data="$(clickhouse_data_dir)"
    mkdir -p "$data"
    render "$HERE/clickhouse/config.xml.in" "$dir/config.xml" \
        HOST="$HOST" TCP_PORT="$CH_TCP_PORT" HTTP_PORT="$CH_HTTP_PORT" DIR="$dir" DATA="$data"
    cp "$HERE/clickhouse/users.xml" "$dir/users.xml"
}

clickhouse_ready() {
    port_open "$CH_TCP_PORT" &&
        clickhouse-client --host "$HOST" --port "$CH_TCP_PORT" --query "SELECT 1" >/dev/null 2>&1
}

start_clickhouse() {
    local dir
    setup_clickhouse
    dir="$(svc_dir clickhouse)"
    say "clickhouse keeps its tables in $(clickhouse_data_dir) (KPROBE_CLICKHOUSE_DATA=${KPROBE_CLICKHOUSE_DATA:-tmpfs})"
    # Its own log goes to log/; server.log catches what it prints before the logger is up.
    (cd "$dir" && spawn clickhouse clickhouse-server --config-file="$dir/config.xml" >/dev/null)
}

# ---------------------------------------------------------------- commands

write_env() {
    cat >"$CACHE/stack.env" <<EOF
# Written by deploy/stack.sh start: KEY=VALUE, no quoting, loadable by Python or 'set -a; . file'.
KAFKA_BOOTSTRAP=$HOST:$KAFKA_PORT
NEO4J_URI=bolt://$HOST:$NEO4J_BOLT_PORT
NEO4J_AUTH=none
CLICKHOUSE_HOST=$HOST
CLICKHOUSE_PORT=$CH_TCP_PORT
CLICKHOUSE_HTTP_PORT=$CH_HTTP_PORT
CLICKHOUSE_USER=default
EOF
}

cmd_start() {
    local svc="$1" pid port started
    mkdir -p "$(svc_dir "$svc")"
    if pid="$(running_pid "$svc")"; then
        say "$svc already running (pid $pid) on $HOST:$(svc_port "$svc"): nothing to do"
        return 0
    fi
    rm -f "$(pid_file "$svc")"
    port="$(svc_port "$svc")"
    if port_open "$port"; then
        ss -ltnp "sport = :$port" >&2 || true
        die "$HOST:$port is already taken by a process this script did not start; not starting $svc"
    fi
    "setup_$svc"
    started=$SECONDS
    say "starting $svc..."
    "start_$svc"
    pid="$(cat "$(pid_file "$svc")")"
    wait_ready "$svc" "$pid" "${svc}_ready" "$(log_file "$svc")"
    say "$svc ready on $HOST:$port (pid $pid) after $((SECONDS - started))s"
}

# SIGTERM to the process group spawn() created (the JVMs' shutdown hooks flush their stores),
# SIGKILL after 30 s.
terminate() {
    local svc="$1" pid="$2" waited=0
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= 60)); then
            err "$svc did not stop in 30s: sending SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    rm -f "$(pid_file "$svc")"
}

# The data each server keeps between runs (what clean deletes).
svc_data() {
    case "$1" in
        kafka) echo "$(svc_dir kafka)/data" ;;
        neo4j) echo "$(svc_dir neo4j)/home" ;;
        clickhouse) clickhouse_data_dir ;;
    esac
}

cmd_clean() {
    local svc="$1" data
    cmd_stop "$svc"
    data="$(svc_data "$svc")"
    if [[ -e "$data" ]]; then
        rm -rf "$data"
        say "$svc data deleted ($data)"
    fi
    # the per-checkout directory in /dev/shm, once nothing else is in it
    [[ "$svc" == clickhouse && "$data" == /dev/shm/kprobe-stack-* ]] && { rmdir "$(dirname "$data")" 2>/dev/null || true; }
    return 0
}

cmd_stop() {
    local svc="$1" pid
    if ! pid="$(running_pid "$svc")"; then
        rm -f "$(pid_file "$svc")"
        say "$svc not running: nothing to do"
        return 0
    fi
    say "stopping $svc (pid $pid)..."
    terminate "$svc" "$pid"
    say "$svc stopped"
}

cmd_status() {
    local svc="$1" pid
    if pid="$(running_pid "$svc")"; then
        if port_open "$(svc_port "$svc")"; then
            say "$svc: running (pid $pid) on $HOST:$(svc_port "$svc")"
        else
            say "$svc: process $pid alive but $HOST:$(svc_port "$svc") not accepting connections"
            return 1
        fi
    else
        say "$svc: stopped"
        return 1
    fi
}

cmd_setup() {
    "setup_$1"
    say "$1: set up"
}

main() {
    local action="${1:-}" target="${2:-all}" svcs svc rc=0
    [[ -n "$action" ]] || usage
    case "$target" in
        all) svcs=("${SERVICES[@]}") ;;
        kafka | neo4j | clickhouse) svcs=("$target") ;;
        *) err "unknown service '$target'"; usage ;;
    esac
    case "$action" in
        start | stop | status | setup | clean) ;;
        *) err "unknown command '$action'"; usage ;;
    esac

    mkdir -p "$CACHE"
    JAVA_HOME="$(find_java_home)" || die "no JDK 17+ found under /usr/lib/jvm (set KPROBE_JAVA_HOME)"
    export JAVA_HOME
    KAFKA_JAVA_HOME="$(find_kafka_java_home)" ||
        die "no JDK for Kafka (KPROBE_KAFKA_JAVA_HOME=${KPROBE_KAFKA_JAVA_HOME:-} has no bin/java?)"
    # One stack.sh at a time: two concurrent starts must not both format or spawn.
    exec 9>"$CACHE/.stack.lock"
    flock -w 900 9 || die "another deploy/stack.sh is still running (lock $CACHE/.stack.lock)"

    for svc in "${svcs[@]}"; do
        if [[ "$action" == status ]]; then
            cmd_status "$svc" || rc=3
        else
            "cmd_$action" "$svc"  # any failure exits (set -e / die)
        fi
    done
    if [[ "$action" == start ]]; then
        write_env
        say "connection settings in $CACHE/stack.env"
    fi
    if [[ "$action" == stop ]] && [[ "$target" == all ]]; then
        rm -f "$CACHE/stack.env"
    fi
    return "$rc"
}

main "$@"
