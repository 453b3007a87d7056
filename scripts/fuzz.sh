#!/usr/bin/env bash
# Fuzzing on stable Rust (proptest), release build, bounded in time: the codec in process
# (tests/fuzz_codec.rs: valid 3.1/3.1.1/5.0 packets round-trip, mutated sequences and
# random bytes fail cleanly, the same whole or in pieces) and whole connections against
# the real broker binary (tests/fuzz_connection.rs: well-formed answers, the spec's
# DISCONNECT, clean closes, no panic, a healthy client still served).
#
#   scripts/fuzz.sh                 # 10 minutes, shared among the targets
#   scripts/fuzz.sh --minutes 60
#   scripts/fuzz.sh --minutes 2 --cases 100000   # stop a target at 100000 cases
#
# Every target runs until its share of the time is used (or --cases, default 100
# million); it prints "fuzz TARGET: N cases in S s". The summary adds them up. A failure
# prints the shrunk failing input: make it a regression test with its exact bytes.
# Exits 1 on any failure.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

minutes=10
cases=100000000
while [ "$#" -gt 0 ]; do
    case "$1" in
        --minutes) minutes=${2:?--minutes needs a number}; shift 2 ;;
        --minutes=*) minutes=${1#--minutes=}; shift ;;
        --cases) cases=${2:?--cases needs a number}; shift 2 ;;
        --cases=*) cases=${1#--cases=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "fuzz.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$minutes$cases" in
    *[!0-9]*) echo "fuzz.sh: --minutes and --cases take whole numbers" >&2; exit 2 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The targets, one test function each, run one at a time so that each gets the machine.
targets=(
    "fuzz_codec fuzz_valid_sequences_round_trip"
    "fuzz_codec fuzz_mutated_sequences_decode_or_fail_cleanly"
    "fuzz_codec fuzz_random_bytes_decode_or_fail_cleanly"
    "fuzz_codec fuzz_message_props_round_trip_and_random_blocks"
    "fuzz_connection fuzz_connections_get_well_formed_answers_and_clean_closes"
    "fuzz_connection fuzz_connections_random_bytes_get_clean_closes"
    "fuzz_connection fuzz_connections_against_tight_limits_get_the_specs_answers"
)
share=$(( minutes * 60 / ${#targets[@]} ))
[ "$share" -ge 1 ] || share=1

echo "fuzz.sh: building (release)"
cargo test --release --test fuzz_codec --test fuzz_connection --no-run

log=$(mktemp)
one=$(mktemp)
trap 'rm -f "$log" "$one"' EXIT
status=0
for t in "${targets[@]}"; do
    set -- $t
    echo "fuzz.sh: $2 for up to ${share} s"
    # The time budget bounds the run; the outer timeout only guards against a hang.
    MIDGE_FUZZ_CASES=$cases MIDGE_FUZZ_SECONDS=$share \
        timeout --kill-after=30s $(( share + 300 ))s \
        cargo test --release --test "$1" -- --exact "$2" --nocapture --test-threads=1 \
        >"$one" 2>&1 || true
    cat "$one" >>"$log"
    # With --nocapture the count may share a line with libtest's "test NAME ... ".
    grep -o 'fuzz [a-z0-9-]*: [0-9]* cases in [0-9.]* s ([0-9]*/s)' "$one" || true
    if ! grep -q '^test result: ok. 1 passed' "$one"; then
        echo "fuzz.sh: $2 FAILED:"
        grep -E -A3 'panicked|minimal input|failed after' "$one" | head -40 || true
        status=1
    fi
done
grep -o 'fuzz [a-z0-9-]*: [0-9]* cases' "$log" |
    awk '{ n += $3; t++ } END { printf "fuzz.sh: %d targets, %d cases in total\n", t, n }'
if [ "$status" -ne 0 ]; then
    echo "fuzz.sh: FAILED"
fi
exit "$status"
