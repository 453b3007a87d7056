#!/usr/bin/env bash
# Runs the whole workspace's test suite (midge and midge-bench): unit tests, integration
# tests (tests/*.rs, including the interop tests against the real mosquitto_pub /
# mosquitto_sub) and doc tests.
#
# Installs Debian's mosquitto-clients first when mosquitto_pub is missing (the interop
# tests fail, never skip, without it). Extra arguments go to `cargo test`, e.g.
#   scripts/test.sh --test cli
#   scripts/test.sh -- --nocapture
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_install=0
for tool in mosquitto_pub mosquitto_sub; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        need_install=1
    fi
done

if [ "$need_install" -eq 1 ]; then
    echo "test.sh: mosquitto clients not found, installing mosquitto-clients" >&2
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "test.sh: not root and no sudo: cannot install mosquitto-clients" >&2
        exit 1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends mosquitto-clients
fi
command -v mosquitto_pub >/dev/null
command -v mosquitto_sub >/dev/null

# Bounded: well under CI's limit even on 2 cores. The output is also summed up in one
# closing line, so the last thing printed counts every test of every target (cargo's own
# last line belongs to whichever target ran last, often the doc tests).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
timeout --kill-after=30s 1500s cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "all targets: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
