#!/usr/bin/env bash
# Records the project's own test traffic: real clients (curl, openssl s_client, Python's ssl
# module, a rustls client, Chromium) talk to a real TLS server (openssl s_server) and a plain HTTP
# server in two network namespaces made here; tcpdump records each exchange; extract.py writes the
# captures, the raw ClientHello payloads, a few hostile shapes cut from them, and both manifests.
#
#   sudo testdata/record.sh            # rewrites testdata/pcap, testdata/payloads, the manifests
#
# Needs root, iproute2, tcpdump, openssl, curl, python3 and cargo; Chromium is optional (its
# captures are skipped, and the script says so). Only addresses inside the namespaces are used:
# 10.99.0.0/24 and fd99::/64 on a veth pair. The namespaces are removed on exit, and any left
# over from an interrupted run are removed first, so the script can be run again at any time.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
CNS=bhrec-client
SNS=bhrec-server
C4=10.99.0.1 S4=10.99.0.2 C6=fd99::1 S6=fd99::2
NAMES="api.openai.com api.anthropic.com generativelanguage.googleapis.com \
bedrock-runtime.us-east-1.amazonaws.com api.mistral.ai api.cohere.com api.groq.com \
openrouter.ai huggingface.co"

missing=()
for tool in ip tcpdump openssl curl python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "missing: ${missing[*]} (apt-get install -y iproute2 tcpdump openssl curl python3)" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "needs root (network namespaces and tcpdump)" >&2
    exit 1
fi
chromium=$(command -v chromium || command -v chromium-browser || true)
[ -n "$chromium" ] || echo "chromium not installed: its captures are skipped (apt-get install -y chromium)" >&2

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del "$CNS" 2>/dev/null || true
    ip netns del "$SNS" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns del "$CNS" 2>/dev/null || true
ip netns del "$SNS" 2>/dev/null || true

echo "==> the rustls client"
(cd "$root" && cargo build -q -p bulkhead-testkit --example hello_client)
rustls_client="${CARGO_TARGET_DIR:-$root/target}/debug/examples/hello_client"

echo "==> lab CA and a server certificate for every name"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=bulkhead record lab CA" -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
san=$(for n in $NAMES; do printf 'DNS:%s,' "$n"; done)
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=api.openai.com" \
    -keyout "$work/srv.key" -out "$work/srv.csr" 2>/dev/null
openssl x509 -req -in "$work/srv.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 30 -extfile <(printf 'subjectAltName=%s\n' "${san%,}") -out "$work/srv.pem" 2>/dev/null

echo "==> namespaces $CNS and $SNS"
ip netns add "$CNS"
ip netns add "$SNS"
ip link add bhrec-c0 netns "$CNS" type veth peer name bhrec-s0 netns "$SNS"
ip -n "$CNS" link set lo up
ip -n "$SNS" link set lo up
ip -n "$CNS" addr add "$C4/24" dev bhrec-c0
ip -n "$SNS" addr add "$S4/24" dev bhrec-s0
ip -n "$CNS" addr add "$C6/64" dev bhrec-c0 nodad
ip -n "$SNS" addr add "$S6/64" dev bhrec-s0 nodad
# One MSS per packet, as on a real wire: with the veth's segmentation offload, tcpdump would see
# a 1.8 KB hello as one oversized packet.
ip -n "$CNS" link set bhrec-c0 gso_max_segs 1 up
ip -n "$SNS" link set bhrec-s0 gso_max_segs 1 up

echo "==> servers: openssl s_server on 443 (IPv4 and IPv6), python http.server on 80"
mkdir -p "$work/www"
for fam in -4 -6; do
    ip netns exec "$SNS" openssl s_server -quiet -www "$fam" -accept 443 \
        -cert "$work/srv.pem" -key "$work/srv.key" </dev/null >/dev/null 2>&1 &
    pids+=($!)
done
(cd "$work/www" && exec ip netns exec "$SNS" python3 -m http.server 80 --bind "$S4" >/dev/null 2>&1) &
pids+=($!)
for _ in $(seq 50); do
    if ip netns exec "$SNS" ss -Hltn | grep -q ':443' && ip netns exec "$SNS" ss -Hltn | grep -q ':80 '; then
        break
    fi
    sleep 0.1
done

mkdir -p "$work/pcap"
: >"$work/sources.tsv"
# record NAME MTU DESCRIPTION -- COMMAND...: runs COMMAND in the client namespace under tcpdump.
record() {
    local name=$1 mtu=$2 desc=$3
    shift 4
    ip -n "$CNS" link set bhrec-c0 mtu "$mtu"
    ip -n "$SNS" link set bhrec-s0 mtu "$mtu"
    ip netns exec "$CNS" tcpdump -i bhrec-c0 -U -s 0 -w "$work/pcap/$name.pcap" \
        'tcp port 443 or tcp port 80' 2>/dev/null &
    local dump=$!
    pids+=("$dump")
    sleep 1
    if timeout 60 ip netns exec "$CNS" "$@" >"$work/$name.out" 2>&1; then
        echo "    $name: $(head -c 120 "$work/$name.out" | tr '\n' ' ')"
    else
        echo "    $name: the client failed (see below); recorded anyway" >&2
        tail -5 "$work/$name.out" >&2
    fi
    sleep 1
    kill -INT "$dump"
    wait "$dump" 2>/dev/null || true
    printf '%s\t%s\n' "$name" "$desc" >>"$work/sources.tsv"
}

ossl() { # NAME ADDR SNI-ARGS...: s_client, one handshake, then a clean close
    local addr=$1
    shift
    echo | openssl s_client -connect "$addr" -CAfile "$work/ca.pem" -verify_return_error -brief "$@"
}
pyssl() { # ADDR NAME
    python3 - "$1" "$2" "$work/ca.pem" <<'EOF'
import socket, ssl, sys
addr, name, ca = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection((addr, 443), timeout=10) as s:
    with ctx.wrap_socket(s, server_hostname=name) as t:
        t.sendall(b"GET / HTTP/1.1\r\nHost: " + name.encode() + b"\r\nConnection: close\r\n\r\n")
        print(t.version(), t.recv(64).split(b"\r\n")[0].decode())
EOF
}
chrome() { # NAME ADDR
    local profile
    profile=$(mktemp -d -p "$work")
    "$chromium" --headless --no-sandbox --disable-gpu --disable-background-networking \
        --disable-component-update --no-first-run --no-default-browser-check \
        --user-data-dir="$profile" --ignore-certificate-errors \
        --host-resolver-rules="MAP $1 $2" --dump-dom "https://$1/"
}
export -f ossl pyssl chrome
export work chromium

ver_curl=$(curl --version | head -1 | cut -d' ' -f1-2)
ver_ossl=$(openssl version | cut -d' ' -f1-2)
ver_py=$(python3 -c 'import ssl, sys; print(f"Python {sys.version.split()[0]} ({ssl.OPENSSL_VERSION})")')

echo "==> recording"
record curl_v4 1500 "$ver_curl over IPv4" -- \
    curl -sS -o /dev/null -w '%{http_code}\n' --cacert "$work/ca.pem" \
    --resolve "api.openai.com:443:$S4" https://api.openai.com/
record curl_v6 1500 "$ver_curl over IPv6" -- \
    curl -sS -o /dev/null -w '%{http_code}\n' --cacert "$work/ca.pem" \
    --resolve "api.openai.com:443:[$S6]" https://api.openai.com/
record curl_http_v4 1500 "$ver_curl, plain HTTP over IPv4" -- \
    curl -sS -o /dev/null -w '%{http_code}\n' --resolve "api.openai.com:80:$S4" http://api.openai.com/
record openssl_tls13_v4 1500 "$ver_ossl s_client -tls1_3 over IPv4" -- \
    bash -c "ossl $S4:443 -tls1_3 -servername bedrock-runtime.us-east-1.amazonaws.com"
record openssl_tls12_v6 1500 "$ver_ossl s_client -tls1_2 over IPv6" -- \
    bash -c "ossl [$S6]:443 -tls1_2 -servername api.cohere.com"
record openssl_nosni_v4 1500 "$ver_ossl s_client -noservername over IPv4" -- \
    bash -c "ossl $S4:443 -noservername -verify_hostname api.openai.com"
record python_v4 1500 "$ver_py over IPv4" -- \
    bash -c "pyssl $S4 generativelanguage.googleapis.com"
record python_v6 1500 "$ver_py over IPv6" -- \
    bash -c "pyssl $S6 api.groq.com"
record rustls_pq_v4 1500 "rustls (aws-lc-rs) X25519MLKEM768 key share over IPv4" -- \
    "$rustls_client" --connect "$S4:443" --name api.mistral.ai --ca "$work/ca.pem"
record rustls_pq_v6 1500 "rustls (aws-lc-rs) X25519MLKEM768 key share over IPv6" -- \
    "$rustls_client" --connect "[$S6]:443" --name api.mistral.ai --ca "$work/ca.pem"
record rustls_classic_v4 1500 "rustls (aws-lc-rs) X25519 key share over IPv4" -- \
    "$rustls_client" --connect "$S4:443" --name huggingface.co --ca "$work/ca.pem" --classic
record rustls_tls12_v4 1500 "rustls (aws-lc-rs) TLS 1.2 only over IPv4" -- \
    "$rustls_client" --connect "$S4:443" --name huggingface.co --ca "$work/ca.pem" --classic --tls12
if [ -n "$chromium" ]; then
    ver_chr=$("$chromium" --version 2>/dev/null | head -1 | cut -d' ' -f1-2)
    record chromium_v4 1500 "$ver_chr headless over IPv4" -- \
        bash -c "chrome api.anthropic.com $S4"
    record chromium_v6 1500 "$ver_chr headless over IPv6" -- \
        bash -c "chrome api.anthropic.com [$S6]"
    # A 400-byte MTU cuts Chromium's hello into six segments. It must come last: below 1280
    # bytes the kernel takes the IPv6 addresses off the link.
    record chromium_mtu400_v4 400 "$ver_chr headless over IPv4, link MTU 400" -- \
        bash -c "chrome openrouter.ai $S4"
fi

echo "==> extracting hellos and writing the manifests"
python3 "$here/extract.py" "$work/pcap" "$work/sources.tsv" "$here"
du -sh "$here"
