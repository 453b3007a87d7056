#!/usr/bin/env bash
# Benchmarks midge against Mosquitto, rumqttd and FlashMQ with midge-bench (see
# docs/BENCHMARKS.md).
#
#   scripts/bench.sh                      # every scenario, midge vs Mosquitto vs rumqttd vs FlashMQ
#   scripts/bench.sh --scenarios issue15 --runs 3   # the independent harness's rows
#                                         # (issue 15), each the median of 3 runs
#   scripts/bench.sh --with-50k           # also 50,000 idle connections
#   scripts/bench.sh --quick              # small sizes: a smoke run of ~2.5 minutes
#   scripts/bench.sh --scenarios fanin-q1,latency
#   scripts/bench.sh --broker "other=/path/to/start-other.sh {port}"  # one more broker
#   scripts/bench.sh --only-midge         # midge alone (no comparison)
#   scripts/bench.sh --no-flashmq         # (or --no-mosquitto, --no-rumqttd) without it
#   scripts/bench.sh --runs 3             # every scenario 3 times per broker, brokers
#                                         # alternating: medians, ranges, ratios of medians
#   FLASHMQ=/path/to/flashmq scripts/bench.sh   # use that FlashMQ binary
#   scripts/bench.sh --profile            # perf profile of midge during fan-in QoS 1
#                                         # (midge built with [profile.profiling]:
#                                         # release plus debug info, target/profiling/)
#   scripts/bench.sh -- --latency-secs 5  # anything after -- goes to `midge-bench run`
#   scripts/bench.sh --durability         # durable-q1 and fanin-q1 on midge with sync
#                                         # "always" / "never" / persistence off and on
#                                         # Mosquitto without / with persistence
#   scripts/bench.sh --midge-persistence off   # [persistence] of the standard midge:
#                                         # default (as shipped), always, interval, never, off
#   scripts/bench.sh --store-dir /mnt/x   # where the brokers' stores go (default: /tmp)
#   scripts/bench.sh --scenarios backlog --no-flashmq -- --backlog-sessions 100 \
#       --backlog-total 100000            # the offline backlog (issue 16), short: 100
#                                         # persistent sessions × 1,000 QoS 1 messages
#                                         # queued, kill -9, restart, drain (default
#                                         # 1,000 × 10,000; also backlog-q2,
#                                         # backlog-fanout, backlog-fanout-q2; rumqttd is
#                                         # skipped: no persistent store)
#
# Builds midge and midge-bench in release mode, installs Mosquitto (apt-get) and rumqttd
# 0.20 (cargo install) when missing, builds FlashMQ from its source archive when missing
# (outside the repository: $CARGO_TARGET_DIR/peers/, or /var/tmp/midge-bench-peers/ when
# the target directory is inside the repository; apt-get installs cmake, g++ and
# libssl-dev if needed), writes each broker a config for 127.0.0.1 with queue / inflight
# limits high enough that nothing is dropped at QoS 1 (Mosquitto, rumqttd and FlashMQ
# without persistence; midge with its persistence as shipped, which writes only for
# persistent sessions and retained messages), and runs `midge-bench run`, which starts a
# fresh broker on a new port and an empty store for every scenario, stops it afterwards,
# and prints the comparison table (also written to target/midge-bench/table.md, or
# durability.md with --durability). Every broker this script starts is stopped on exit.
#
# The independent harness's rows (issue 15: fanout50-q0 ... conn5k, `issue15` for all)
# get that harness's limits instead, from MIDGE_BENCH_LIMITS=issue15, which midge-bench
# sets for them: 1000 in flight and 1,000,000 queued per client where a broker has such
# settings, midge otherwise with its shipped defaults (config.toml) and persistence on.
#
# The offline backlog (backlog, backlog-q2, backlog-fanout, backlog-fanout-q2) gets
# MIDGE_BENCH_LIMITS=backlog: midge with persistence on (as --midge-persistence says),
# queues unlimited, no memory_limit; Mosquitto with `persistence true` and its default
# autosave_interval (1800 s). midge-bench kills the broker with SIGKILL and starts it
# again with MIDGE_BENCH_RESTART=1, which keeps the store of the first start.
#
# Environment: FLASHMQ (a FlashMQ binary to use), FLASHMQ_SRC (its source archive),
# MIDGE_BENCH_PEERS (where to build it).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac

WITH_50K=0
QUICK=0
PROFILE=0
DURABILITY=0
SCENARIOS=""
EXTRA_BROKERS=()
USE_MOSQUITTO=1
USE_RUMQTTD=1
USE_FLASHMQ=1
RUNS=1
MIDGE_PERSISTENCE=default
STORE_BASE=""
PASS=()
OUT=""

while [ $# -gt 0 ]; do
    case "$1" in
        --with-50k) WITH_50K=1 ;;
        --quick) QUICK=1 ;;
        --profile) PROFILE=1 ;;
        --durability) DURABILITY=1 ;;
        --scenarios) SCENARIOS=$2; shift ;;
        --broker) EXTRA_BROKERS+=("$2"); shift ;;
        --only-midge) USE_MOSQUITTO=0; USE_RUMQTTD=0; USE_FLASHMQ=0 ;;
        --no-mosquitto) USE_MOSQUITTO=0 ;;
        --no-rumqttd) USE_RUMQTTD=0 ;;
        --no-flashmq) USE_FLASHMQ=0 ;;
        --runs) RUNS=$2; shift ;;
        --midge-persistence) MIDGE_PERSISTENCE=$2; shift ;;
        --store-dir) STORE_BASE=$2; shift ;;
        --out) OUT=$2; shift ;;
        --) shift; PASS+=("$@"); break ;;
        -h|--help) sed -n '2,59p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "bench.sh: $*" >&2; }

case "$MIDGE_PERSISTENCE" in
    default|always|interval|never|off) ;;
    *) log "--midge-persistence: default, always, interval, never or off"; exit 2 ;;
esac
case "$RUNS" in
    ''|*[!0-9]*|0) log "--runs: a number of runs, 1 or more"; exit 2 ;;
esac
if [ "$DURABILITY" = 1 ]; then
    USE_RUMQTTD=0
    USE_FLASHMQ=0
    [ -n "$SCENARIOS" ] || SCENARIOS="durable-q1,fanin-q1"
    [ -n "$OUT" ] || OUT="$TARGET/midge-bench/durability.md"
fi
[ -n "$OUT" ] || OUT="$TARGET/midge-bench/table.md"

log "building midge and midge-bench (release)"
cargo build --release -p midge -p midge-bench
MIDGE_BIN="$TARGET/release/midge"
if [ "$PROFILE" = 1 ]; then
    # The shipped release binary has no debug info; perf needs it to unwind and name
    # frames. [profile.profiling] is the release build with debug info.
    log "building midge with debug info (--profile profiling)"
    cargo build --profile profiling -p midge
    MIDGE_BIN="$TARGET/profiling/midge"
fi

if [ "$USE_MOSQUITTO" = 1 ] && ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    log "installing mosquitto"
    apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

RUMQTTD=$(command -v rumqttd || echo "$HOME/.cargo/bin/rumqttd")
if [ "$USE_RUMQTTD" = 1 ] && [ ! -x "$RUMQTTD" ]; then
    log "installing rumqttd 0.20 (cargo install, a few minutes)"
    cargo install rumqttd --version '^0.20'
fi

# FlashMQ: $FLASHMQ, else one on the PATH, else one built earlier under $PEERS, else
# built there now from its source archive (about 2 minutes on 2 cores). Never inside the
# repository: FlashMQ is a comparison broker, not part of midge.
PEERS=${MIDGE_BENCH_PEERS:-$TARGET/peers}
case "$PEERS" in "$ROOT"|"$ROOT"/*) PEERS=/var/tmp/midge-bench-peers ;; esac
FLASHMQ_SRC=${FLASHMQ_SRC:-/work/shared/peers/flashmq/FlashMQ-7beb9c3.tar.gz}
FLASHMQ=${FLASHMQ:-}
if [ "$USE_FLASHMQ" = 1 ]; then
    if [ -n "$FLASHMQ" ]; then
        [ -x "$FLASHMQ" ] || { log "FLASHMQ=$FLASHMQ is not an executable"; exit 2; }
    elif command -v flashmq >/dev/null; then
        FLASHMQ=$(command -v flashmq)
    elif [ -x "$PEERS/FlashMQ/build/flashmq" ]; then
        FLASHMQ="$PEERS/FlashMQ/build/flashmq"
    else
        if [ ! -f "$FLASHMQ_SRC" ]; then
            log "no FlashMQ binary and no source archive $FLASHMQ_SRC:"
            log "set FLASHMQ=/path/to/flashmq or FLASHMQ_SRC=/path/to/FlashMQ.tar.gz, or pass --no-flashmq"
            exit 2
        fi
        if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null \
            || ! dpkg -s libssl-dev >/dev/null 2>&1; then
            log "installing cmake, g++ and libssl-dev (to build FlashMQ)"
            apt-get update -qq && apt-get install -y -qq cmake g++ libssl-dev >/dev/null
        fi
        log "building FlashMQ from $FLASHMQ_SRC under $PEERS (a few minutes)"
        rm -rf "$PEERS/FlashMQ"
        mkdir -p "$PEERS"
        tar xzf "$FLASHMQ_SRC" -C "$PEERS"
        [ -d "$PEERS/FlashMQ" ] || { log "$FLASHMQ_SRC did not unpack to FlashMQ/"; exit 1; }
        mkdir -p "$PEERS/FlashMQ/build"
        if ! (cd "$PEERS/FlashMQ/build" && cmake -DCMAKE_BUILD_TYPE=Release .. \
                && make -j"$(nproc)" flashmq) > "$PEERS/flashmq-build.log" 2>&1; then
            tail -20 "$PEERS/flashmq-build.log" >&2
            log "building FlashMQ failed; the whole output is in $PEERS/flashmq-build.log"
            exit 1
        fi
        FLASHMQ="$PEERS/FlashMQ/build/flashmq"
    fi
    log "FlashMQ: $FLASHMQ"
fi

# Sockets: every connection is a file descriptor, in the broker and in the load generator.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "open files limit: $(ulimit -n)"

WORK=$(mktemp -d /tmp/midge-bench.XXXXXX)
PIDS="$WORK/pids"
: > "$PIDS"
# The brokers' stores, one new directory per broker start, all under STORES.
if [ -n "$STORE_BASE" ]; then
    mkdir -p "$STORE_BASE"
    STORES=$(mktemp -d "$STORE_BASE/midge-bench-stores.XXXXXX")
else
    STORES="$WORK/stores"
    mkdir "$STORES"
fi
BENCH_PID=""
cleanup() {
    local status=$?
    [ -n "$BENCH_PID" ] && kill "$BENCH_PID" 2>/dev/null || true
    while read -r pid; do
        kill "$pid" 2>/dev/null || true
    done < "$PIDS"
    sleep 0.5
    while read -r pid; do
        kill -9 "$pid" 2>/dev/null || true
    done < "$PIDS"
    rm -rf "$WORK" "$STORES"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One start script per broker: `start-NAME.sh PORT [VARIANT]` writes the config for PORT,
# records its pid (kept by exec) for the trap, and becomes the broker.
#
# Stores: midge-bench runs one broker at a time and stops it before starting the next, so
# each start first deletes the stores of the earlier ones and makes a new empty one.
# Every broker therefore begins with no sessions, no retained messages, nothing queued:
# a scenario never sees what an earlier one left.
#
# start-midge.sh PORT [default|always|interval|never|off]: [persistence] as shipped
# (enabled, sync "always"), sync = "always" / "interval" / "never", or enabled = false;
# `path` is a new directory (the same one again with MIDGE_BENCH_RESTART=1, the restart
# after a kill -9 in the backlog scenarios). With MIDGE_BENCH_LIMITS=backlog: queues
# unlimited in count and bytes, no memory_limit. With MIDGE_BENCH_LIMITS=issue15 (the independent
# harness's rows): the shipped defaults (config.toml: log_level "info" and the rest) but
# for 1000 in flight and 1,000,000 queued; otherwise per-connection logging off and the
# queue unlimited.
cat > "$WORK/start-midge.sh" <<EOF
#!/bin/sh
case "\${2:-default}" in
    default) P="" ;;
    always|interval|never) P="sync = \"\$2\"" ;;
    off) P="enabled = false" ;;
    *) echo "start-midge.sh: unknown persistence variant \$2" >&2; exit 2 ;;
esac
if [ "\${MIDGE_BENCH_LIMITS:-}" = issue15 ]; then
    L="max_queued_messages = 1000000
max_inflight_messages = 1000"
elif [ "\${MIDGE_BENCH_LIMITS:-}" = backlog ]; then
    # The offline backlog (issue 16): queues unlimited in count and bytes, and no
    # memory_limit (Mosquitto has none by default either), so that what it costs shows.
    [ "\${2:-default}" = off ] && { echo "start-midge.sh: the backlog needs persistence" >&2; exit 2; }
    L="log_level = \"warn\"
max_queued_messages = 0
max_queued_bytes = 0
memory_limit = 0
max_inflight_messages = 1000"
else
    L="# Per-connection logging off, as for the other brokers.
log_level = \"warn\"
max_queued_messages = 0
max_inflight_messages = 1000"
fi
# MIDGE_BENCH_RESTART=1: the same broker again after a kill -9 (backlog scenarios):
# keep its store.
[ -n "\${MIDGE_BENCH_RESTART:-}" ] || rm -rf "$STORES"/*
mkdir -p "$STORES/midge-\$1"
cat > "$WORK/midge-\$1.toml" <<CONF
\$L
[[listener]]
bind = "127.0.0.1"
port = \$1
[persistence]
path = "$STORES/midge-\$1"
\$P
CONF
echo \$\$ >> "$PIDS"
exec "$MIDGE_BIN" -c "$WORK/midge-\$1.toml"
EOF

# start-mosquitto.sh PORT [disk]: `persistence false`, or `persistence true` with a new
# persistence_location. Mosquitto keeps its state in memory either way and with
# persistence writes the whole database every autosave_interval (default 1800 s, kept)
# and on exit: a snapshot, not a write per message. `user root` keeps it from switching
# to the mosquitto user when started as root (that user cannot write under this script's
# private directory); for any other user it has no effect.
# With MIDGE_BENCH_LIMITS=issue15: 1,000,000 queued instead of unlimited. With
# MIDGE_BENCH_LIMITS=backlog (the offline backlog, issue 16): always `persistence true`,
# autosave_interval left at its default (1800 s), so a kill -9 shows what it loses; with
# MIDGE_BENCH_RESTART=1 (its restart) the store is kept.
cat > "$WORK/start-mosquitto.sh" <<EOF
#!/bin/sh
Q=0
[ "\${MIDGE_BENCH_LIMITS:-}" = issue15 ] && Q=1000000
[ -n "\${MIDGE_BENCH_RESTART:-}" ] || rm -rf "$STORES"/*
D=\${2:-}
[ "\${MIDGE_BENCH_LIMITS:-}" = backlog ] && D=disk
if [ "\$D" = disk ]; then
    mkdir -p "$STORES/mosquitto-\$1"
    P="persistence true
persistence_location $STORES/mosquitto-\$1/
user root"
else
    P="persistence false"
fi
cat > "$WORK/mosquitto-\$1.conf" <<CONF
listener \$1 127.0.0.1
max_connections -1
allow_anonymous true
\$P
max_queued_messages \$Q
max_queued_bytes 0
max_inflight_messages 1000
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
CONF
echo \$\$ >> "$PIDS"
exec "$MOSQUITTO" -c "$WORK/mosquitto-\$1.conf"
EOF

# rumqttd 0.20 has no per-client queue limit (messages wait in the commit log of their
# filter: 100 segments of 100 MiB here) and a fixed window of 100 unacknowledged QoS 1
# messages towards each client (MAX_INFLIGHT in its router); max_inflight_count = 1000
# is the most it accepts from a client. The same config serves every row.
cat > "$WORK/start-rumqttd.sh" <<EOF
#!/bin/sh
cat > "$WORK/rumqttd-\$1.toml" <<CONF
id = 0

# Messages live in one commit log per filter: 100 segments of 100 MiB before the
# oldest is dropped, far more than any scenario writes.
[router]
id = 0
max_connections = 100010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 100

[v4.1]
name = "v4-1"
listen = "127.0.0.1:\$1"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 4194304
    max_inflight_count = 1000
    dynamic_filters = true
CONF
echo \$\$ >> "$PIDS"
exec "$RUMQTTD" -q -c "$WORK/rumqttd-\$1.toml"
EOF
# FlashMQ: no persistence, log errors only, tcp_nodelay, its per-client limits at their
# highest: max_qos_msg_pending_per_client (at most 65535) bounds the QoS 1/2 messages
# unacknowledged by and queued for a client together (it has no separate in-flight
# setting), max_qos_bytes_pending_per_client their bytes. The same config serves every row.
cat > "$WORK/start-flashmq.sh" <<EOF
#!/bin/sh
cat > "$WORK/flashmq-\$1.conf" <<CONF
allow_anonymous true
max_qos_msg_pending_per_client 65535
max_qos_bytes_pending_per_client 1000000000
log_level error
listen {
    protocol mqtt
    port \$1
    inet_protocol ip4
    inet4_bind_address 127.0.0.1
    tcp_nodelay true
}
CONF
echo \$\$ >> "$PIDS"
exec "$FLASHMQ" --config-file "$WORK/flashmq-\$1.conf"
EOF
chmod +x "$WORK"/start-*.sh

ARGS=()
if [ "$DURABILITY" = 1 ]; then
    # Ratios: each midge variant against each Mosquitto variant, in-memory Mosquitto first.
    BROKERS=(--broker "midge-always=$WORK/start-midge.sh {port} always"
             --broker "midge-never=$WORK/start-midge.sh {port} never"
             --broker "midge-mem=$WORK/start-midge.sh {port} off")
    if [ "$USE_MOSQUITTO" = 1 ]; then
        BROKERS+=(--broker "mosquitto-mem=$WORK/start-mosquitto.sh {port}"
                  --broker "mosquitto-disk=$WORK/start-mosquitto.sh {port} disk")
        ARGS+=(--against mosquitto-mem,mosquitto-disk)
    fi
else
    BROKERS=(--broker "midge=$WORK/start-midge.sh {port} $MIDGE_PERSISTENCE")
    [ "$USE_MOSQUITTO" = 1 ] && BROKERS+=(--broker "mosquitto=$WORK/start-mosquitto.sh {port}")
    [ "$USE_RUMQTTD" = 1 ] && BROKERS+=(--broker "rumqttd=$WORK/start-rumqttd.sh {port}")
    [ "$USE_FLASHMQ" = 1 ] && BROKERS+=(--broker "flashmq=$WORK/start-flashmq.sh {port}")
fi
for b in "${EXTRA_BROKERS[@]+"${EXTRA_BROKERS[@]}"}"; do
    BROKERS+=(--broker "$b")
done

BENCH="$TARGET/release/midge-bench"
LOGS="$TARGET/midge-bench"
mkdir -p "$LOGS" "$(dirname "$OUT")"

if [ "$PROFILE" = 1 ]; then
    command -v perf >/dev/null || { log "installing linux-perf"; apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
    PORT=20999
    PERF_DATA="$LOGS/perf.data"
    "$WORK/start-midge.sh" "$PORT" "$MIDGE_PERSISTENCE" > "$LOGS/midge-profile.log" 2>&1 &
    MIDGE_PID=$!
    for _ in $(seq 100); do "$BENCH" -p "$PORT" conn -n 1 >/dev/null 2>&1 && break; sleep 0.1; done
    log "profiling midge (pid $MIDGE_PID) during fan-in QoS 1; samples in $PERF_DATA"
    "$BENCH" --threads 1 -p "$PORT" run --pid "$MIDGE_PID" --scenarios fanin-q1 "${PASS[@]+"${PASS[@]}"}" \
        > "$WORK/profile-table.md" &
    BENCH_PID=$!
    sleep 0.5
    # Rust release builds keep no frame pointers: unwind with DWARF (the profiling build
    # has the debug info for it).
    perf record -F 999 -g --call-graph dwarf,16384 -p "$MIDGE_PID" -o "$PERF_DATA" -- sleep 5 \
        2> "$WORK/perf-record.log" >/dev/null
    wait "$BENCH_PID" || true
    BENCH_PID=""
    kill "$MIDGE_PID" 2>/dev/null || true
    cat "$WORK/profile-table.md"
    echo
    echo '$ perf report --no-children --sort symbol -g none | head -40'
    { perf report -i "$PERF_DATA" --no-children --sort symbol -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40; } || true
    echo
    echo '$ perf report --no-children -g caller,0.5,callee --percent-limit 3 | head -150'
    { perf report -i "$PERF_DATA" --no-children --stdio -g caller,0.5,callee --percent-limit 3 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -150; } || true
    exit 0
fi

if [ -n "$SCENARIOS" ]; then
    ARGS+=(--scenarios "$SCENARIOS")
elif [ "$WITH_50K" = 1 ]; then
    ARGS+=(--scenarios "fanin-q0,fanin-q1,fanout-q0,fanout-q1,pairs,latency,idle:10000,idle:50000,large,sub-scale,retained,conn")
fi
[ "$RUNS" -gt 1 ] && ARGS+=(--repeat "$RUNS")
if [ "$QUICK" = 1 ]; then
    ARGS+=(--duration 2 --latency-secs 3 --pairs 100 --scale-subs 10000 --retained 10000
           --conn-count 2000 --large-count 100)
fi

log "brokers' output in $LOGS/, their stores under $STORES/"
"$BENCH" --threads 1 run "${BROKERS[@]}" "${ARGS[@]+"${ARGS[@]}"}" \
    --log-dir "$LOGS" --out "$OUT" "${PASS[@]+"${PASS[@]}"}" &
BENCH_PID=$!
wait "$BENCH_PID"
BENCH_PID=""
log "table written to $OUT"
