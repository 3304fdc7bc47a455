#!/usr/bin/env bash
# Records the project's own test traffic: real clients (curl, openssl s_client, Python's ssl
# module, a rustls client, Chromium) talk to a real TLS server (openssl s_server) and a plain HTTP
# server in two network namespaces made here; tcpdump records each exchange; extract.py writes the
# captures, the raw ClientHello payloads, a few hostile shapes cut from them, and both manifests.
#
#   sudo testdata/record.sh            # rewrites testdata/pcap, testdata/payloads, the manifests
#                                      # and testdata/coverage (below)
#   sudo testdata/record.sh coverage   # rewrites testdata/coverage only
#   sudo testdata/record.sh base       # everything but testdata/coverage
#
# testdata/coverage holds the shapes real-world captures come in beyond a plain connection:
# flows that start mid-stream (cut from a full capture after the fact: the SYN, or the SYN and
# the SYN-ACK, taken out), server names that are IP literals, traffic inside tunnels recorded on
# the underlay (VXLAN with the kernel's own device; GENEVE, GRE, ERSPAN and IP in IP with the
# userspace endpoint tunnel.py wherever the kernel cannot create them, as on kernels built
# without those modules: same wire format either way), and mail connections that upgrade with
# STARTTLS (curl and openssl s_client against mailserver.py).
#
# Needs root, iproute2, tcpdump, openssl, curl, python3 and cargo; Chromium is optional (its
# captures are skipped, and the script says so). Only addresses inside the namespaces are used:
# 10.99.0.0/24 and fd99::/64 on a veth pair. The namespaces are removed on exit, and any left
# over from an interrupted run are removed first, so the script can be run again at any time.
set -euo pipefail

mode=${1:-all}
case "$mode" in
all | base | coverage) ;;
*)
    echo "usage: record.sh [all|base|coverage]" >&2
    exit 2
    ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
CNS=bhrec-client
SNS=bhrec-server
C4=10.99.0.1 S4=10.99.0.2 C6=fd99::1 S6=fd99::2
NAMES="api.openai.com api.anthropic.com generativelanguage.googleapis.com \
bedrock-runtime.us-east-1.amazonaws.com api.mistral.ai api.cohere.com api.groq.com \
openrouter.ai huggingface.co smtp.example.com imap.example.com pop.example.com"

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

rustls_client="${CARGO_TARGET_DIR:-$root/target}/debug/examples/hello_client"
if [ "$mode" != coverage ]; then
    echo "==> the rustls client"
    (cd "$root" && cargo build -q -p bulkhead-testkit --example hello_client)
fi

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

if [ "$mode" != coverage ]; then
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
fi

if [ "$mode" != base ]; then
    echo "==> coverage: mid-stream flows, IP-literal names, tunnels, STARTTLS"
    cov="$work/coverage"
    mkdir -p "$cov/pcap"
    : >"$cov/rows.tsv"
    # covrec NAME EXPECTED DESCRIPTION FILTER -- COMMAND...: COMMAND in the client namespace, with
    # tcpdump on the underlay (bhrec-c0) keeping what FILTER selects. EXPECTED: the names the
    # client was told to send, in order (`-`: none).
    covrec() {
        local name=$1 expected=$2 desc=$3 filter=$4
        shift 5
        ip netns exec "$CNS" tcpdump -i bhrec-c0 -U -s 0 -w "$cov/pcap/$name.pcap" "$filter" 2>/dev/null &
        local dump=$!
        pids+=("$dump")
        sleep 1
        if timeout 60 ip netns exec "$CNS" "$@" >"$work/$name.out" 2>&1; then
            echo "    $name: $(head -c 100 "$work/$name.out" | tr '\n' ' ')"
        else
            echo "    $name: the client failed (the capture is kept): $(tail -2 "$work/$name.out" | tr '\n' ' ')" >&2
        fi
        sleep 1
        kill -INT "$dump"
        wait "$dump" 2>/dev/null || true
        printf 'pcap/%s.pcap\tTCP\t%s\t\t\t\t\trecord.sh: %s\n' "$name" "$expected" "$desc" >>"$cov/rows.tsv"
    }
    web='tcp port 443 or tcp port 80'
    ip -n "$CNS" link set bhrec-c0 mtu 1500
    ip -n "$SNS" link set bhrec-s0 mtu 1500

    # Mid-stream: whole connections, then cut (cut.py) so that the capture starts at the
    # handshake-completing ACK, or at the SYN-ACK.
    covrec full_curl_v4 api.openai.com "(cut below)" "$web" -- \
        curl -sS -o /dev/null --cacert "$work/ca.pem" --resolve "api.openai.com:443:$S4" https://api.openai.com/
    covrec full_python_v6 api.groq.com "(cut below)" "$web" -- bash -c "pyssl $S6 api.groq.com"
    python3 "$here/cut.py" "$cov/pcap/full_curl_v4.pcap" "$cov/pcap/midstream_curl_v4.pcap" 2
    python3 "$here/cut.py" "$cov/pcap/full_python_v6.pcap" "$cov/pcap/synack_first_python_v6.pcap" 1
    rm "$cov/pcap/full_curl_v4.pcap" "$cov/pcap/full_python_v6.pcap"
    sed -i -e '/full_curl_v4/d' -e '/full_python_v6/d' "$cov/rows.tsv"
    printf 'pcap/midstream_curl_v4.pcap\tTCP\tapi.openai.com\t\t\t\t\trecord.sh: %s, SYN and SYN-ACK cut off\n' "$ver_curl" >>"$cov/rows.tsv"
    printf 'pcap/synack_first_python_v6.pcap\tTCP\tapi.groq.com\t\t\t\t\trecord.sh: %s over IPv6, SYN cut off\n' "$ver_py" >>"$cov/rows.tsv"

    # IP literals as the name: s_client sends what -servername says; curl's Host is the address.
    covrec ipliteral_openssl_v4 "$S4" "$ver_ossl s_client -servername $S4" "$web" -- \
        bash -c "echo | openssl s_client -connect $S4:443 -servername $S4 -brief"
    covrec ipliteral_http_v4 "$S4" "$ver_curl http://$S4/ (Host: an IP literal)" "$web" -- \
        curl -sS -o /dev/null "http://$S4/"

    # Tunnels on the underlay 10.99.0.1 <-> 10.99.0.2 (fd99::1 <-> fd99::2); inside, 10.97.0.1
    # and fd97::1 talk to the TLS server at 10.97.0.2 / fd97::2.
    tunnel_up() { # KIND: creates bhtun in both namespaces
        case "$1" in
        vxlan)
            ip -n "$CNS" link add bhtun type vxlan id 42 dstport 4789 local "$C4" remote "$S4" dev bhrec-c0
            ip -n "$SNS" link add bhtun type vxlan id 42 dstport 4789 local "$S4" remote "$C4" dev bhrec-s0
            ;;
        *)
            local lc=$C4 ls=$S4
            case "$1" in ip4in6 | ip6in6) lc=$C6 ls=$S6 ;; esac
            ip netns exec "$CNS" python3 "$here/tunnel.py" "$1" bhtun "$lc" "$ls" &
            tunnel_pids+=($!)
            ip netns exec "$SNS" python3 "$here/tunnel.py" "$1" bhtun "$ls" "$lc" &
            tunnel_pids+=($!)
            pids+=("${tunnel_pids[@]}")
            for _ in $(seq 50); do
                ip -n "$CNS" link show bhtun >/dev/null 2>&1 && ip -n "$SNS" link show bhtun >/dev/null 2>&1 && break
                sleep 0.1
            done
            ;;
        esac
        ip -n "$CNS" addr add 10.97.0.1/24 dev bhtun
        ip -n "$SNS" addr add 10.97.0.2/24 dev bhtun
        ip -n "$CNS" addr add fd97::1/64 dev bhtun nodad
        ip -n "$SNS" addr add fd97::2/64 dev bhtun nodad
        ip -n "$CNS" link set bhtun mtu 1400 up
        ip -n "$SNS" link set bhtun mtu 1400 up
    }
    tunnel_down() {
        # The endpoints first: their TUN devices go with them.
        for p in "${tunnel_pids[@]}"; do kill "$p" 2>/dev/null || true; done
        for p in "${tunnel_pids[@]}"; do wait "$p" 2>/dev/null || true; done
        tunnel_pids=()
        ip -n "$CNS" link del bhtun 2>/dev/null || true
        ip -n "$SNS" link del bhtun 2>/dev/null || true
    }
    tunnel_pids=()
    tunnel_filter='udp port 4789 or udp port 6081 or ip proto 47 or ip proto 4 or ip proto 41 or ip6 proto 4 or ip6 proto 41'
    for t in "vxlan 4 api.openai.com VXLAN (kernel device, UDP 4789)" \
        "geneve 4 api.anthropic.com GENEVE (UDP 6081, IP payload, one option)" \
        "gre 6 huggingface.co GRE with key and sequence number" \
        "erspan 4 api.mistral.ai ERSPAN type II over GRE" \
        "ipip 4 api.cohere.com IPv4 in IPv4" \
        "sit 6 api.groq.com IPv6 in IPv4" \
        "ip4in6 4 openrouter.ai IPv4 in IPv6" \
        "ip6in6 6 generativelanguage.googleapis.com IPv6 in IPv6"; do
        set -- $t
        kind=$1 fam=$2 name=$3
        shift 3
        desc="$ver_curl over $*"
        tunnel_up "$kind"
        if [ "$fam" = 6 ]; then addr='[fd97::2]'; else addr=10.97.0.2; fi
        covrec "${kind}_curl_v$fam" "$name" "$desc" "$tunnel_filter" -- \
            curl -sS -o /dev/null --max-time 20 --cacert "$work/ca.pem" --resolve "$name:443:$addr" "https://$name/"
        tunnel_down
    done

    # STARTTLS: mailserver.py offers it on 25, 587, 143 and 110.
    ip netns exec "$SNS" python3 "$here/mailserver.py" "$work/srv.pem" "$work/srv.key" "$S4" "$S6" &
    pids+=($!)
    for _ in $(seq 50); do
        ip netns exec "$SNS" ss -Hltn | grep -q ':110 ' && break
        sleep 0.1
    done
    mail='tcp port 25 or tcp port 587 or tcp port 143 or tcp port 110'
    echo "hello" >"$work/mail.txt"
    covrec starttls_curl_smtp_v4 smtp.example.com "$ver_curl smtp:// --ssl-reqd (port 587)" "$mail" -- \
        curl -sS --ssl-reqd --cacert "$work/ca.pem" --resolve "smtp.example.com:587:$S4" \
        --mail-from a@example.com --mail-rcpt b@example.com -T "$work/mail.txt" smtp://smtp.example.com:587/
    covrec starttls_openssl_smtp_v4 smtp.example.com "$ver_ossl s_client -starttls smtp (port 25)" "$mail" -- \
        bash -c "echo QUIT | openssl s_client -connect $S4:25 -starttls smtp -servername smtp.example.com -brief"
    covrec starttls_openssl_imap_v6 imap.example.com "$ver_ossl s_client -starttls imap over IPv6" "$mail" -- \
        bash -c "echo a9 LOGOUT | openssl s_client -connect [$S6]:143 -starttls imap -servername imap.example.com -brief"
    covrec starttls_openssl_pop3_v4 pop.example.com "$ver_ossl s_client -starttls pop3" "$mail" -- \
        bash -c "echo QUIT | openssl s_client -connect $S4:110 -starttls pop3 -servername pop.example.com -brief"
    covrec plain_smtp_python_v4 - "$ver_py smtplib without STARTTLS (never upgrades)" "$mail" -- \
        python3 -c "import smtplib; s = smtplib.SMTP('$S4', 25, timeout=10); s.ehlo('client.lab'); print(s.docmd('MAIL FROM:<a@example.com>')); s.quit()"

    rm -rf "$here/coverage"
    mkdir -p "$here/coverage/pcap"
    cp "$cov"/pcap/*.pcap "$here/coverage/pcap/"
    {
        echo "# file	transport	expected_names_in_order	max_tcp_segments_of_clienthello	max_tls_handshake_fragments	max_quic_crypto_frags	quic_versions	source"
        sort "$cov/rows.tsv"
    } >"$here/coverage/manifest.tsv"
fi
du -sh "$here"
