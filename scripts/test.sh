#!/usr/bin/env bash
# Runs the whole workspace's test suite (midge and midge-bench): unit tests, integration
# tests (tests/*.rs, including the interop tests against the real mosquitto_pub /
# mosquitto_sub) and doc tests.
#
# Installs the Debian packages the tests use when a tool is missing (the tests fail, never
# skip, without them): mosquitto-clients (mosquitto_pub/mosquitto_sub), mosquitto (the
# broker and mosquitto_passwd, for password-file interop), openssl (certs/generate.sh
# and key-format conversions), chromium (the status page, headless), iproute2 and
# util-linux (`ip` and `unshare`: a WebSocket listener off loopback, in a network
# namespace of its own) and
# python3-prometheus-client (the Prometheus text parser that reads /metrics, run by
# Debian's /usr/bin/python3). When it installs mosquitto, the package's broker service is
# kept from starting (it would take port 1883 from midge). Extra arguments go to
# `cargo test`, e.g.
#   scripts/test.sh --test cli
#   scripts/test.sh -- --nocapture
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# tool -> Debian package
declare -A package_of=(
    [mosquitto_pub]=mosquitto-clients
    [mosquitto_sub]=mosquitto-clients
    [mosquitto]=mosquitto
    [mosquitto_passwd]=mosquitto
    [openssl]=openssl
    [chromium]=chromium
    [ip]=iproute2
    [unshare]=util-linux
)
missing=()
for tool in "${!package_of[@]}"; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        missing+=("${package_of[$tool]}")
    fi
done
# A Python module rather than a tool: Debian's python3 must import it (a python3 earlier
# on PATH, such as pyenv's, does not see apt's modules).
if ! /usr/bin/python3 -c 'import prometheus_client.parser' >/dev/null 2>&1; then
    missing+=(python3-prometheus-client)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
    echo "test.sh: installing missing packages: $packages" >&2
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "test.sh: not root and no sudo: cannot install $packages" >&2
        exit 1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # Debian's mosquitto package starts (and enables) a broker service on 127.0.0.1:1883,
    # the port midge's shipped config.toml uses: the README's first command would then
    # fail with "address in use". The tests only need the program. So no service starts
    # during the install (policy-rc.d answers "forbidden" to invoke-rc.d and
    # deb-systemd-invoke), and the service this script caused is disabled and stopped
    # afterwards. A mosquitto installed before (and its service) is left alone: this
    # branch runs only when the package is missing.
    installing_mosquitto=0
    case " $packages " in *" mosquitto "*) installing_mosquitto=1 ;; esac
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ "$installing_mosquitto" = 1 ] && [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# scripts/test.sh: no service starts while it installs packages\nexit 101\n' |
            "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        own_policy=1
    fi
    install_status=0
    # shellcheck disable=SC2086
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends $packages || install_status=$?
    if [ "$own_policy" = 1 ]; then
        "${sudo[@]}" rm -f "$policy"
    fi
    [ "$install_status" = 0 ] || exit "$install_status"
    if [ "$installing_mosquitto" = 1 ] && [ -d /run/systemd/system ]; then
        echo "test.sh: disabling the mosquitto service the package installed (port 1883 stays free for midge)" >&2
        "${sudo[@]}" systemctl disable --now mosquitto.service >/dev/null 2>&1 || true
    fi
fi
# The broker lives in /usr/sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/sbin"
for tool in "${!package_of[@]}"; do
    command -v "$tool" >/dev/null
done
/usr/bin/python3 -c 'import prometheus_client.parser' 

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
