#!/usr/bin/env bash
# Generates a development PKI for midge's TLS listeners with the openssl CLI:
#
#   ca.crt     ca.key       CA, 10 years, CA:TRUE, keyCertSign + cRLSign
#   server.crt server.key   CN=localhost, SAN DNS:localhost IP:127.0.0.1 IP:::1, serverAuth, 825 days
#   client.crt client.key   CN=$CLIENT_CN (default "demo"), clientAuth, 825 days
#
# Keys are EC P-256 in PKCS#8 ("BEGIN PRIVATE KEY"), mode 0600. For development and tests
# only: the CA key sits next to the certificates.
#
# Usage: certs/generate.sh [--force] [OUTPUT_DIR]
#   OUTPUT_DIR  where to write (default: the directory of this script, i.e. certs/)
#   --force     regenerate all six files even if some already exist
#
# Without --force existing files are never overwritten: if all six exist, nothing is done;
# if only some exist, the script stops with an error.
set -euo pipefail

prog=${0##*/}
force=0
out=""

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

while [ $# -gt 0 ]; do
    case "$1" in
    --force | -f) force=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    --)
        shift
        break
        ;;
    -*)
        echo "$prog: unknown option '$1' (see --help)" >&2
        exit 2
        ;;
    *)
        if [ -n "$out" ]; then
            echo "$prog: only one output directory may be given (see --help)" >&2
            exit 2
        fi
        out=$1
        ;;
    esac
    shift
done
if [ $# -gt 0 ]; then
    if [ -n "$out" ] || [ $# -gt 1 ]; then
        echo "$prog: only one output directory may be given (see --help)" >&2
        exit 2
    fi
    out=$1
fi

if ! command -v openssl >/dev/null 2>&1; then
    echo "$prog: openssl not found; install it with: apt-get install -y openssl" >&2
    exit 1
fi

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${out:-$script_dir}
mkdir -p -- "$out"
out=$(cd -- "$out" && pwd)

client_cn=${CLIENT_CN:-demo}
if [ "${#client_cn}" -gt 64 ]; then
    echo "$prog: CLIENT_CN must be at most 64 characters (X.509 upper bound for a CN)" >&2
    exit 2
fi
# In `-subj` (read as UTF-8 with `-utf8`), '/' separates RDNs and '+' joins multi-valued RDNs; '\' escapes both.
subj_escape() {
    local s=${1//\\/\\\\}
    s=${s//\//\\/}
    s=${s//+/\\+}
    printf '%s' "$s"
}

files=(ca.crt ca.key server.crt server.key client.crt client.key)
if [ "$force" -eq 0 ]; then
    present=()
    for f in "${files[@]}"; do
        if [ -e "$out/$f" ]; then present+=("$f"); fi
    done
    if [ "${#present[@]}" -eq "${#files[@]}" ]; then
        echo "$prog: $out already holds ${files[*]}; nothing written (--force regenerates them)"
        exit 0
    fi
    if [ "${#present[@]}" -gt 0 ]; then
        echo "$prog: $out already holds ${present[*]}; refusing to overwrite (--force regenerates all)" >&2
        exit 1
    fi
fi

# Everything is generated in a private scratch directory next to the output and renamed into
# place only once all of it succeeded, so a failure never leaves a half-written set.
umask 077
work=$(mktemp -d "$out/.generate.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

cat >"$work/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no

[dn]

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

run() {
    local log="$work/openssl.log"
    if ! openssl "$@" >"$log" 2>&1; then
        echo "$prog: openssl $1 failed:" >&2
        cat "$log" >&2
        exit 1
    fi
}

# EC P-256; openssl 3 writes genpkey keys as PKCS#8 ("BEGIN PRIVATE KEY").
genkey() {
    run genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/$1"
}

# A random positive 128-bit serial (no .srl file).
serial() {
    echo "0x$(openssl rand -hex 16)"
}

# sign NAME SUBJECT SECTION: a CSR for NAME.key, signed by the CA with the extensions of SECTION.
sign() {
    run req -new -config "$work/openssl.cnf" -utf8 -key "$work/$1.key" -subj "$2" -out "$work/$1.csr"
    run x509 -req -in "$work/$1.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
        -set_serial "$(serial)" -days 825 -sha256 \
        -extfile "$work/openssl.cnf" -extensions "$3" -out "$work/$1.crt"
}

genkey ca.key
run req -x509 -new -config "$work/openssl.cnf" -extensions ca_ext -key "$work/ca.key" \
    -subj "/O=midge development/CN=midge development CA" \
    -set_serial "$(serial)" -days 3650 -sha256 -out "$work/ca.crt"

genkey server.key
sign server "/CN=localhost" server_ext

genkey client.key
sign client "/CN=$(subj_escape "$client_cn")" client_ext

run verify -CAfile "$work/ca.crt" "$work/server.crt" "$work/client.crt"

chmod 0600 "$work"/*.key
chmod 0644 "$work"/*.crt
for f in "${files[@]}"; do
    mv -f -- "$work/$f" "$out/$f"
done

echo "$prog: wrote to $out:"
echo "  ca.crt      ca.key       CA (10 years)"
echo "  server.crt  server.key   CN=localhost, DNS:localhost, IP:127.0.0.1, IP:::1 (825 days)"
echo "  client.crt  client.key   CN=$client_cn (825 days)"
echo "Verify with:"
echo "  openssl verify -CAfile '$out/ca.crt' '$out/server.crt' '$out/client.crt'"
echo "  openssl x509 -in '$out/server.crt' -noout -subject -issuer -dates -ext subjectAltName,extendedKeyUsage"
echo "  openssl x509 -in '$out/client.crt' -noout -subject -issuer -dates -ext extendedKeyUsage"
