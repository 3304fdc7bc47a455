#!/usr/bin/env bash
# Records testdata/dns/sni_spoof_v4.pcap, the capture the replay tests of the DNS check
# (`sni_dns_check`) use: a workload resolves a name through a resolver on the far side, connects
# to the address it was given, then sends the same ClientHello to another address (SNI
# spoofing), then names a host it never resolved.
#
#   sudo testdata/record_dns.sh        # rewrites testdata/dns/sni_spoof_v4.pcap
#
# Needs root, iproute2, tcpdump, openssl and python3. Only addresses inside the namespaces made
# here are used: 10.98.0.0/24 on a veth pair. The namespaces are removed on exit.
#
# The exchanges, in order, all from the client 10.98.0.1:
#   1. DNS: A? api.openai.com to the resolver 10.98.0.2:53, answered 10.98.0.2 (TTL 300)
#   2. TLS to 10.98.0.2:443, SNI api.openai.com            (the address the name resolves to)
#   3. TLS to 10.98.0.3:443, SNI api.openai.com            (another address: a mismatch)
#   4. TLS to 10.98.0.3:443, SNI api.anthropic.com         (a name never resolved in the capture)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CNS=bhdns-client
SNS=bhdns-server
C4=10.98.0.1 S4=10.98.0.2 X4=10.98.0.3

for tool in ip tcpdump openssl python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces and tcpdump)" >&2; exit 1; }

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

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=api.openai.com" -addext "subjectAltName=DNS:api.openai.com,DNS:api.anthropic.com" \
    -keyout "$work/srv.key" -out "$work/srv.pem" 2>/dev/null

ip netns add "$CNS"
ip netns add "$SNS"
ip link add bhdns-c0 netns "$CNS" type veth peer name bhdns-s0 netns "$SNS"
ip -n "$CNS" link set lo up
ip -n "$SNS" link set lo up
ip -n "$CNS" addr add "$C4/24" dev bhdns-c0
ip -n "$SNS" addr add "$S4/24" dev bhdns-s0
ip -n "$SNS" addr add "$X4/24" dev bhdns-s0
ip -n "$CNS" link set bhdns-c0 gso_max_segs 1 up
ip -n "$SNS" link set bhdns-s0 gso_max_segs 1 up

# The resolver: answers A questions for api.openai.com with 10.98.0.2, NXDOMAIN otherwise.
cat >"$work/dns.py" <<'EOF'
import socket, struct, sys
addr = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 53))
while True:
    q, peer = s.recvfrom(512)
    ident, _flags, qd = struct.unpack("!HHH", q[:6])
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode())
        i += 1 + q[i]
    question = q[12:i + 5]
    qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
    name = ".".join(labels).lower()
    if name == "api.openai.com" and qtype == 1:
        answer = struct.pack("!HHHLH", 0xC00C, 1, 1, 300, 4) + socket.inet_aton(addr)
        head = struct.pack("!HHHHHH", ident, 0x8580, 1, 1, 0, 0)
    else:
        answer = b""
        head = struct.pack("!HHHHHH", ident, 0x8583, 1, 0, 0, 0)
    s.sendto(head + question + answer, peer)
EOF
ip netns exec "$SNS" python3 "$work/dns.py" "$S4" &
pids+=($!)
ip netns exec "$SNS" openssl s_server -quiet -www -4 -accept 443 \
    -cert "$work/srv.pem" -key "$work/srv.key" </dev/null >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    if ip netns exec "$SNS" ss -Hltn | grep -q ':443' && ip netns exec "$SNS" ss -Hlun | grep -q ':53'; then
        break
    fi
    sleep 0.1
done

mkdir -p "$here/dns"
ip netns exec "$CNS" tcpdump -i bhdns-c0 -U -s 0 -w "$work/capture.pcap" \
    'udp port 53 or tcp port 443' 2>/dev/null &
dump=$!
pids+=("$dump")
sleep 1

echo "==> 1. the workload resolves api.openai.com"
ip netns exec "$CNS" python3 - "$S4" <<'EOF'
import socket, struct, sys
q = struct.pack("!HHHHHH", 0x2a2a, 0x0100, 1, 0, 0, 0)
for label in "api.openai.com".split("."):
    q += bytes([len(label)]) + label.encode()
q += b"\x00" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.bind(("0.0.0.0", 53535))
s.sendto(q, (sys.argv[1], 53))
r, _ = s.recvfrom(512)
print("    answer:", socket.inet_ntoa(r[-4:]))
EOF
hello() { # ADDR NAME
    echo | ip netns exec "$CNS" openssl s_client -connect "$1:443" -servername "$2" -brief \
        >/dev/null 2>&1 || true
}
echo "==> 2. TLS to the address it was given";              hello "$S4" api.openai.com
echo "==> 3. the same name to another address";              hello "$X4" api.openai.com
echo "==> 4. a name never resolved";                         hello "$X4" api.anthropic.com
sleep 1
kill -INT "$dump"
wait "$dump" 2>/dev/null || true
cp "$work/capture.pcap" "$here/dns/sni_spoof_v4.pcap"
echo "wrote $here/dns/sni_spoof_v4.pcap"
