#!/usr/bin/env bash
# Runs the hardening attacks of issue 12 against midge and Mosquitto 2.0 with
# `midge-bench attack` (see docs/RELIABILITY.md, "Attacks and faults").
#
#   scripts/attacks.sh                          # every attack, midge and Mosquitto
#   scripts/attacks.sh --midge /path/to/midge   # another midge binary (e.g. before/after)
#   scripts/attacks.sh --attacks deep-subscribe,login-flood
#   scripts/attacks.sh --brokers midge          # midge alone
#   scripts/attacks.sh -- --runs 2 --secs 20    # anything after -- goes to `midge-bench attack`
#
# Builds midge and midge-bench in release mode, installs Mosquitto (apt-get) when missing,
# and runs the harness: each attack against a fresh broker (new port, empty store, the
# shipped configuration), measuring the broker's RSS before / at the peak / after, what
# the attacker got, and a healthy client's round trip during the attack. The table is
# printed and written to target/midge-bench/attacks.md (or --out FILE).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac

MIDGE=""
ATTACKS=all
BROKERS=midge,mosquitto
OUT="$TARGET/midge-bench/attacks.md"
PASS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --midge) MIDGE=$2; shift ;;
        --attacks) ATTACKS=$2; shift ;;
        --brokers) BROKERS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --) shift; PASS+=("$@"); break ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "attacks.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "attacks.sh: $*" >&2; }

log "building midge and midge-bench (release)"
cargo build --release -p midge -p midge-bench
[ -n "$MIDGE" ] || MIDGE="$TARGET/release/midge"

case ",$BROKERS," in
    *,mosquitto,*)
        if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
            log "installing mosquitto"
            apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null
        fi ;;
esac
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

mkdir -p "$TARGET/midge-bench" "$(dirname "$OUT")"
log "midge: $MIDGE; brokers' logs in $TARGET/midge-bench/"
exec "$TARGET/release/midge-bench" --threads 2 attack --attacks "$ATTACKS" --brokers "$BROKERS" \
    --midge "$MIDGE" --log-dir "$TARGET/midge-bench" --out "$OUT" "${PASS[@]+"${PASS[@]}"}"
