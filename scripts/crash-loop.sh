#!/usr/bin/env bash
# Crash loop for the durable store (issue 7): kills midge (SIGKILL) at random moments
# while publishers send numbered QoS 1 and QoS 2 messages to an offline persistent
# subscriber, restarts it on the same store, and checks that every acknowledged message
# is delivered, QoS 2 messages at most once, in order per publisher.
#
# One iteration = one kill point. The scenario is the crash test of tests/durability/crash.rs
# (CrashRun), run here through its ignored `crash_loop` test on a release build; a fresh
# broker and store every 20 iterations. It runs twice: with unlimited queues, and with the
# shipped config.toml (its queue limits and policy). Loopback only; every iteration is
# bounded in time.
#
#   scripts/crash-loop.sh                    # 500 iterations with each config
#   scripts/crash-loop.sh --iterations 50
#   scripts/crash-loop.sh --config shipped   # only the shipped config.toml
#                                            # (unlimited: only unlimited queues)
#   MIDGE_CRASH_SEED=123 scripts/crash-loop.sh   # replay the kill delays of a run
#
# Prints one line per iteration and a summary: iterations, total acknowledged, total lost,
# total duplicates (QoS 1 redeliveries, allowed; QoS 2 duplicates, not allowed). Exits 1
# if any acknowledged message was lost, a QoS 2 message was delivered twice, order was
# broken, or the run failed in any other way.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

iterations=500
configs="unlimited shipped"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --iterations)
            [ "$#" -ge 2 ] || { echo "crash-loop.sh: --iterations needs a number" >&2; exit 2; }
            iterations=$2
            shift 2
            ;;
        --iterations=*)
            iterations=${1#--iterations=}
            shift
            ;;
        --config)
            [ "$#" -ge 2 ] || { echo "crash-loop.sh: --config needs unlimited, shipped or both" >&2; exit 2; }
            case "$2" in
                both) configs="unlimited shipped" ;;
                unlimited | shipped) configs=$2 ;;
                *) echo "crash-loop.sh: --config: unlimited, shipped or both, got '$2'" >&2; exit 2 ;;
            esac
            shift 2
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "crash-loop.sh: unknown argument: $1 (see --help)" >&2
            exit 2
            ;;
    esac
done
if ! [[ "$iterations" =~ ^[0-9]+$ ]] || [ "$iterations" -lt 1 ]; then
    echo "crash-loop.sh: --iterations must be a positive integer, got '$iterations'" >&2
    exit 2
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "crash-loop.sh: building midge (release)" >&2
cargo build --release

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Bounded: an iteration takes about a second; allow 20 s each, plus the test build.
limit=$((iterations * 20 + 900))
failed=0
# Both configurations: unlimited queues, and the shipped config.toml (issue 16: its
# queue limits must not drop an acknowledged message either).
for config in $configs; do
    echo "crash-loop.sh: $iterations iterations with the $config config" >&2
    status=0
    MIDGE_CRASH_CONFIG=$config MIDGE_CRASH_ITERATIONS=$iterations \
        timeout --kill-after=30s "${limit}s" \
        cargo test --release --test durability -- --ignored --exact crash::crash_loop --nocapture \
        2>&1 | tee "$log" || status=$?

    summary=$(grep -E '^CRASH LOOP SUMMARY:' "$log" | tail -n 1 || true)
    echo
    if [ -z "$summary" ]; then
        echo "crash-loop.sh: FAILED ($config): the crash loop ended without a summary" \
            "(exit status $status); see the output above" >&2
        failed=1
        continue
    fi
    field() { sed -E "s/.* $1 ([0-9]+).*/\\1/" <<<"$summary"; }
    done_iterations=$(field iterations)
    acknowledged=$(field acknowledged)
    lost=$(field lost)
    qos1=$(field qos1_redeliveries)
    qos2=$(field qos2_duplicates)
    order=$(field order_violations)
    echo "config:              $config"
    echo "iterations:          $done_iterations"
    echo "acknowledged:        $acknowledged"
    echo "lost:                $lost"
    echo "duplicates:          $((qos1 + qos2)) (QoS 1 redeliveries $qos1, QoS 2 duplicates $qos2)"
    echo "order violations:    $order"
    if [ "$lost" -ne 0 ] || [ "$qos2" -ne 0 ] || [ "$order" -ne 0 ] || [ "$status" -ne 0 ]; then
        echo "crash-loop.sh: FAILED ($config; test exit status $status)" >&2
        failed=1
    fi
done
if [ "$failed" -ne 0 ]; then
    exit 1
fi
echo "crash-loop.sh: OK"
