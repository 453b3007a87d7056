#!/usr/bin/env bash
# Soak test (examples/soak), release build: mixed load against a midge the program starts
# on a scratch store, for a bounded time, with a broker restart (kill -9 by default) in the
# middle. Publishers at QoS 0/1/2 (3.1.1 and 5.0), retained messages and a checker of
# them, persistent subscribers that leave and come back, clients that connect and go all
# the time. Prints the broker's RSS and open fds every --sample-secs, then sent /
# acknowledged / delivered / lost and a "SOAK RESULT:" line. Loopback only.
#
#   scripts/soak.sh                       # 30 minutes
#   scripts/soak.sh --minutes 3
#   scripts/soak.sh --minutes 10 --restart term --rate 200
#
# Other flags go to the program (see examples/soak/main.rs): --seconds S, --restart
# kill|term|none, --sample-secs N, --rate N, --publishers N, --subscribers N,
# --churners N, --max-messages N, --payload BYTES.
# Exits 1 if an acknowledged QoS 1/2 message was lost, a persistent session or a
# retained message went missing, or the broker died on its own.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

minutes=30
args=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --minutes) minutes=${2:?--minutes needs a number}; shift 2 ;;
        --minutes=*) minutes=${1#--minutes=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) args+=("$1"); shift ;;
    esac
done
case "$minutes" in
    '' | *[!0-9]*) echo "soak.sh: --minutes takes a whole number" >&2; exit 2 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "soak.sh: building (release)"
cargo build --release --bin midge --example soak
target=${CARGO_TARGET_DIR:-target}
# Bounded: the load time, the drain (30 s at most), the broker restarts and slack.
exec timeout --kill-after=30s $(( minutes * 60 + 300 ))s \
    "$target/release/examples/soak" --midge "$target/release/midge" --minutes "$minutes" "${args[@]}"
