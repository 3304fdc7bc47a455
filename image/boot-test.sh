#!/usr/bin/env bash
# Boots the gateway image in qemu and checks it end to end:
#
#   sudo image/boot-test.sh IMAGE_DIR        (IMAGE_DIR holds bulkhead.qcow2 from build.sh)
#
#  namespace wl              VM (the image, booted from a copy-on-write overlay)      namespace net
#  10.77.1.2  --- tap ---  eth1 10.77.1.1 | bulkhead, bulk0 | eth0 198.18.0.2  --- tap ---  198.18.0.1
#  (a workload)                                                                      (the "internet":
#                                                                                     HTTP on 8080,
#                                                                                     8081, HTTPS on
#                                                                                     8443, DNS on 53)
#
# A NoCloud seed (cloud-init) gives the VM its addresses and resolver (198.18.0.1), a gateway.toml
# diverting eth0 and eth1, a policy that permits the workload to 198.18.0.1:8080 by address and
# to tls.boot-test.example:8443 by name (and nothing else), and a setup.env (so
# bulkhead-setup.service runs too). The test then checks that:
#   1. bulkhead.service (and bulkhead-setup.service) are active (reported on the serial console);
#   2. /readyz answers 200 from outside the VM (polled from qemu's start: the time it took is
#      reported);
#   3. the permitted connection completes, and arrives masqueraded (from 198.18.0.2);
#   4. the denied one does not complete;
#   5. the connection permitted by name (TLS, SNI tls.boot-test.example) completes, masqueraded;
#   6. the gateway counted the decisions (bulkhead_decisions_total, allowed and denied).
# It also reports, without failing on them, what the kernel fast path did (supported, handed
# off, refused and why) and what the DNS check of names asked (the gateway resolves the SNI
# name through the image's resolver, systemd-resolved, which asks the seed's DNS server). The
# daemon's log is copied to the serial console. The last lines printed say the outcome, the
# accelerator and the duration; BOOT_TEST_RESULT (a file path) gets them too.
#
# KVM when /dev/kvm works (the host's CPU, then without IA32_ARCH_CAPABILITIES), else software
# emulation (TCG: slower, same result); a guest that fails under KVM is booted again under TCG.
# Needs root, qemu-system-x86_64, qemu-img, genisoimage (or xorriso), iproute2, curl, openssl and
# python3. All traffic stays in the namespaces and the VM this script creates; everything is
# removed at exit.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
[ $# -eq 1 ] || { echo "usage: $0 IMAGE_DIR" >&2; exit 2; }
base="$(cd "$1" && pwd)/bulkhead.qcow2"
timeout_s="${BOOT_TIMEOUT:-900}"

missing=()
[ "$(id -u)" = 0 ] || missing+=("root (namespaces and tap devices)")
for t in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils ip:iproute2 curl:curl python3:python3 \
         openssl:openssl; do
    command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t%%:*} (apt-get install ${t#*:})")
done
mkiso=""
if command -v genisoimage >/dev/null 2>&1; then mkiso=genisoimage
elif command -v xorriso >/dev/null 2>&1; then mkiso="xorriso -as mkisofs"
else missing+=("genisoimage or xorriso (apt-get install genisoimage)"); fi
[ -f "$base" ] || missing+=("$base (build it with image/build.sh)")
if [ ${#missing[@]} -gt 0 ]; then
    echo "boot-test: cannot run; missing:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi

started=$(date +%s)
id="bhb$$"
ns_q="$id-q" ns_wl="$id-wl" ns_net="$id-net"
work="$(mktemp -d "${TMPDIR:-/tmp}/bulkhead-boot.XXXXXX")"
qemu_pid="" pids=()

cleanup() {
    set +e
    [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for ns in "$ns_q" "$ns_wl" "$ns_net"; do ip netns del "$ns" 2>/dev/null; done
    if [ -n "${KEEP_BOOT_TEST:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

result() {
    local outcome="$1" detail="$2"
    local line
    line="boot-test: $outcome after $(( $(date +%s) - started )) s (accelerator: ${accel:-none}) on $(date -u +%Y-%m-%dT%H:%M:%SZ): $detail"
    echo "$line"
    [ -z "${BOOT_TEST_RESULT:-}" ] || echo "$line" >> "$BOOT_TEST_RESULT"
    if [ "$outcome" != PASS ]; then
        echo "---- serial console (last 60 lines) ----"
        tail -n 60 "$work/console.log" 2>/dev/null
        exit 1
    fi
}

# --- the VM's disk and its NoCloud seed -------------------------------------------------------
mkdir "$work/seed"
cat > "$work/seed/meta-data" <<EOF
instance-id: bulkhead-boot-test-$started
local-hostname: bulkhead-boot-test
EOF
cat > "$work/seed/network-config" <<'EOF'
version: 2
ethernets:
  eth0:
    match: {macaddress: "52:54:00:b0:00:01"}
    set-name: eth0
    addresses: [198.18.0.2/24]
    routes: [{to: 0.0.0.0/0, via: 198.18.0.1}]
    nameservers: {addresses: [198.18.0.1]}
  eth1:
    match: {macaddress: "52:54:00:b0:00:02"}
    set-name: eth1
    addresses: [10.77.1.1/24]
EOF
cat > "$work/seed/user-data" <<'EOF'
#cloud-config
write_files:
  - path: /etc/bulkhead/gateway.toml
    owner: root:bulkhead
    permissions: "0640"
    content: |
      [gateway]
      id = "boot-test"
      interfaces = ["eth0", "eth1"]
      manage_routing = true
      # As the image and terraform/ configure it (image/README.md, "NAT across the TUN").
      fast_path = false

      [policy]
      file = "/etc/bulkhead/policies/boot-test.toml"

      [metrics]
      listen = "0.0.0.0:9108"
  - path: /etc/bulkhead/policies/boot-test.toml
    owner: root:bulkhead
    permissions: "0640"
    content: |
      [policy]
      default_action = "deny"
      mode = "enforce"

      [smartgroups.workloads]
      cidrs = ["10.77.1.0/24"]

      [addressgroups.test-server]
      cidrs = ["198.18.0.1/32"]

      [webgroups.tls-test]
      domains = ["tls.boot-test.example"]

      [[rules]]
      name = "workloads-to-test-server-8080"
      priority = 100
      src = ["workloads"]
      dst = ["test-server"]
      protocol = "tcp"
      ports = ["8080"]
      action = "permit"
      log = true

      [[rules]]
      name = "workloads-to-tls-test-by-name"
      priority = 110
      src = ["workloads"]
      dst = ["tls-test"]
      protocol = "tcp"
      ports = ["8443"]
      action = "permit"
      log = true
  - path: /etc/bulkhead/setup.env
    permissions: "0600"
    content: |
      BULKHEAD_INSIDE_CIDRS="10.77.1.0/24"
runcmd:
  - [sh, -c, 'setsid sh -c "while :; do echo BOOT-TEST bulkhead=\$(systemctl is-active bulkhead.service) setup=\$(systemctl is-active bulkhead-setup.service) user=\$(ps -o user= -C bulkhead | head -n 1); sleep 3; done" > /dev/ttyS0 2>&1 < /dev/null &']
  - [sh, -c, 'echo "BOOT-TEST resolv.conf -> $(readlink /etc/resolv.conf): $(grep ^nameserver /etc/resolv.conf | tr "\n" " ")" > /dev/ttyS0']
  - [sh, -c, 'setsid journalctl -u bulkhead.service -u bulkhead-setup.service -o short-monotonic --no-pager -n all -f > /dev/ttyS0 2>&1 < /dev/null &']
EOF
(cd "$work/seed" && $mkiso -quiet -output "$work/seed.iso" -volid cidata -joliet -rock \
    user-data meta-data network-config)

# --- the namespaces; qemu makes the tap devices in its own, and they are moved out -------------
for ns in "$ns_q" "$ns_wl" "$ns_net"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done

ms() { echo $(( $(date +%s%N) / 1000000 )); }
# start_qemu ACCEL CPU: boots the image from a fresh overlay, and wires its tap devices into the
# namespaces once qemu has lasted 3 s.
start_qemu() {
    rm -f "$work/disk.qcow2" "$work/console.log"
    qemu-img create -q -f qcow2 -F qcow2 -b "$base" "$work/disk.qcow2"
    qemu_t0=$(ms)
    ip netns exec "$ns_q" qemu-system-x86_64 -accel "$1" -cpu "$2" -m 1024 -smp 2 \
        -display none -no-reboot -serial "file:$work/console.log" -monitor none \
        -drive "file=$work/disk.qcow2,if=virtio,format=qcow2" \
        -drive "file=$work/seed.iso,if=virtio,format=raw,media=cdrom,readonly=on" \
        -netdev tap,id=up,ifname=tapnet,script=no,downscript=no \
        -device virtio-net-pci,netdev=up,mac=52:54:00:b0:00:01 \
        -netdev tap,id=wl,ifname=tapwl,script=no,downscript=no \
        -device virtio-net-pci,netdev=wl,mac=52:54:00:b0:00:02 \
        > "$work/qemu.log" 2>&1 &
    qemu_pid=$!
    sleep 3
    kill -0 "$qemu_pid" 2>/dev/null || { wait "$qemu_pid" 2>/dev/null; qemu_pid=""; return 1; }
    ip -n "$ns_q" link set tapwl netns "$ns_wl"
    ip -n "$ns_q" link set tapnet netns "$ns_net"
    ip -n "$ns_wl" addr add 10.77.1.2/24 dev tapwl
    ip -n "$ns_wl" link set tapwl up
    ip -n "$ns_wl" route add default via 10.77.1.1
    ip -n "$ns_net" addr add 198.18.0.1/24 dev tapnet
    ip -n "$ns_net" link set tapnet up
    accel="$1 (-cpu $2)"
}
stop_qemu() {
    kill "$qemu_pid" 2>/dev/null
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=""
}
# KVM with the host's CPU (qemu's default model asks for features a nested hypervisor may not
# offer); without IA32_ARCH_CAPABILITIES when the host's hypervisor refuses that MSR; else
# software emulation with the most capable emulated CPU.
boot() {
    local cpu
    if [ "$1" = any ] && [ -w /dev/kvm ]; then
        for cpu in host host,arch-capabilities=off; do
            start_qemu kvm "$cpu" && return 0
            echo "boot-test: KVM with -cpu $cpu failed: $(tail -n 2 "$work/qemu.log" | tr '\n' ' ')"
        done
    fi
    start_qemu tcg max || { cat "$work/qemu.log"; result FAIL "qemu did not start"; }
}
boot any
echo "boot-test: qemu running with $accel"

# The "internet": HTTP on 8080 (permitted) and 8081 (denied), HTTPS on 8443 with a certificate
# for tls.boot-test.example (permitted by name), and a DNS server that knows that name.
mkdir "$work/www"
cp "$work/seed/meta-data" "$work/www/"
head -c 4194304 /dev/zero > "$work/www/blob"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=tls.boot-test.example \
    -addext subjectAltName=DNS:tls.boot-test.example \
    -keyout "$work/tls.key" -out "$work/tls.pem" 2>/dev/null
cat > "$work/servers.py" <<'PY'
import http.server, socket, ssl, struct, sys, threading

ADDR, WWW, CERT, KEY = sys.argv[1:5]

class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **kw):
        super().__init__(*a, directory=WWW, **kw)
    def log_message(self, fmt, *args):
        # One line per request on the port's own log: "CLIENT-ADDRESS REQUEST CODE".
        self.server.log.write("%s %s\n" % (self.client_address[0], fmt % args))

def serve(port, log, tls=False):
    srv = http.server.ThreadingHTTPServer((ADDR, port), Handler)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(CERT, KEY)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.log = open(log, "w", buffering=1)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

def dns(log):
    # A for tls.boot-test.example (198.18.0.1), NXDOMAIN for other names, empty for other types.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ADDR, 53))
    out = open(log, "w", buffering=1)
    while True:
        q, peer = sock.recvfrom(4096)
        if len(q) < 12:
            continue
        i, labels = 12, []
        while i < len(q) and q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
        question = q[12:i + 5]
        qtype = struct.unpack("!H", q[i + 1:i + 3])[0] if i + 3 <= len(q) else 0
        name = ".".join(labels).lower()
        known = name == "tls.boot-test.example"
        answer = b""
        if known and qtype == 1:
            answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(ADDR)
        flags = 0x8180 if known else 0x8183
        head = q[:2] + struct.pack("!HHHHH", flags, 1, 1 if answer else 0, 0, 0)
        sock.sendto(head + question + answer, peer)
        out.write("%s %s type %d -> %s\n" % (peer[0], name, qtype, "answer" if answer else "none"))

serve(8080, sys.argv[5] + "/server-8080.log")
serve(8081, sys.argv[5] + "/server-8081.log")
serve(8443, sys.argv[5] + "/server-8443.log", tls=True)
dns(sys.argv[5] + "/dns.log")
PY
ip netns exec "$ns_net" python3 "$work/servers.py" 198.18.0.1 "$work/www" "$work/tls.pem" \
    "$work/tls.key" "$work" > "$work/servers.log" 2>&1 &
pids+=($!)

# --- 1. and 2. the units, and /readyz from outside (polled from qemu's start) --------------------
kvm_failed() {
    if ! kill -0 "$qemu_pid" 2>/dev/null; then
        kvm_failure="qemu exited: $(tail -n 2 "$work/qemu.log" | tr '\n' ' ')"
    elif grep -q -a -i 'KVM internal error\|emulation failure' "$work/qemu.log"; then
        kvm_failure="$(grep -a -i -m 1 'KVM internal error\|emulation failure' "$work/qemu.log")"
    elif [ $(( $(ms) - qemu_t0 )) -gt 90000 ] && ! grep -q -a 'Linux version' "$work/console.log"; then
        kvm_failure="no kernel message 90 s after qemu started"
    else
        return 1
    fi
}
echo "boot-test: waiting for the units and /readyz (timeout ${timeout_s} s)"
deadline=$(( $(date +%s) + timeout_s ))
ready_ms=""
units_ms=""
while [ -z "$ready_ms" ] || [ -z "$units_ms" ]; do
    # KVM under a nested hypervisor can stop the guest mid-boot ("emulation failure") or hang it
    # (no kernel message after GRUB): boot again under software emulation, once.
    if [ "${accel%% *}" = kvm ] && kvm_failed; then
        echo "boot-test: the guest failed under KVM ($kvm_failure): booting it again under TCG"
        stop_qemu
        boot tcg
        echo "boot-test: qemu running with $accel"
        deadline=$(( $(date +%s) + timeout_s )) ready_ms="" units_ms=""
        continue
    fi
    kill -0 "$qemu_pid" 2>/dev/null || result FAIL "qemu exited"
    [ "$(date +%s)" -lt "$deadline" ] \
        || result FAIL "within ${timeout_s} s: units active: ${units_ms:-no}, /readyz 200: ${ready_ms:-no}"
    if [ -z "$units_ms" ] && grep -q -a 'BOOT-TEST bulkhead=active setup=active' "$work/console.log" 2>/dev/null; then
        units_ms=$(( $(ms) - qemu_t0 ))
    fi
    if [ -z "$ready_ms" ]; then
        code="$(ip netns exec "$ns_net" curl -s -m 1 -o /dev/null -w '%{http_code}' http://198.18.0.2:9108/readyz || true)"
        if [ "$code" = 200 ]; then ready_ms=$(( $(ms) - qemu_t0 )); else sleep 1; fi
    else
        sleep 1
    fi
done
secs() { awk -v m="$1" 'BEGIN { printf "%.1f", m / 1000 }'; }
user="$(grep -a -o 'BOOT-TEST bulkhead=active setup=active user=[a-z]*' "$work/console.log" | tail -n 1)"
echo "boot-test: /readyz 200 $(secs "$ready_ms") s after qemu started; units reported active after $(secs "$units_ms") s ($user)"
case "$user" in *user=bulkhead) ;; *) result FAIL "the daemon does not run as user bulkhead: $user" ;; esac

# --- 3. and 4. a permitted and a denied connection from the workload ----------------------------
permitted="$(ip netns exec "$ns_wl" curl -s -m 10 -o /dev/null -w '%{http_code}' http://198.18.0.1:8080/meta-data || true)"
[ "$permitted" = 200 ] || result FAIL "the permitted connection got '$permitted'"
grep -q '^198\.18\.0\.2 ' "$work/server-8080.log" \
    || result FAIL "the server did not see the masqueraded address: $(cat "$work/server-8080.log")"
echo "boot-test: permitted connection completed, masqueraded to 198.18.0.2"
denied="$(ip netns exec "$ns_wl" curl -s -m 5 -o /dev/null -w '%{http_code}' http://198.18.0.1:8081/meta-data || true)"
[ "$denied" = 000 ] || result FAIL "the denied connection got '$denied'"
[ ! -s "$work/server-8081.log" ] || result FAIL "the denied connection reached the server"
echo "boot-test: denied connection did not complete"

# --- 5. a connection permitted by name (TLS) ------------------------------------------------------
# 4 MiB at 1 MiB/s: a flow that lives for seconds after its handshake, long enough for the
# fast path to take it if it can.
tls="$(ip netns exec "$ns_wl" curl -s -m 30 -k --limit-rate 1M -o /dev/null -w '%{http_code} %{size_download}' \
    --resolve tls.boot-test.example:8443:198.18.0.1 https://tls.boot-test.example:8443/blob || true)"
[ "$tls" = "200 4194304" ] || result FAIL "the connection permitted by name got '$tls'"
grep -q '^198\.18\.0\.2 .*blob' "$work/server-8443.log" \
    || result FAIL "the TLS server did not see the masqueraded address: $(cat "$work/server-8443.log")"
echo "boot-test: connection permitted by name (TLS) completed, masqueraded to 198.18.0.2"

# --- 6. the gateway's own account ---------------------------------------------------------------
sleep 1
metrics="$(ip netns exec "$ns_net" curl -s -m 5 http://198.18.0.2:9108/metrics)"
printf '%s\n' "$metrics" > "$work/metrics.txt"
count() { awk -v a="$1" '$1 ~ "^bulkhead_decisions_total\\{" && $1 ~ "action=\"" a "\"" { s += $2 } END { print s + 0 }' <<<"$metrics"; }
allowed="$(count allowed)" denied_n="$(count denied)"
[ "$allowed" -ge 2 ] && [ "$denied_n" -ge 1 ] \
    || result FAIL "decisions counted: allowed $allowed, denied $denied_n"

# What the fast path and the DNS check did (reported, not checked).
metric() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { print s + 0 }' <<<"$metrics"; }
labelled() { awk -v m="$1" 'index($1, m "{") == 1 && $2 > 0 { l = $1; sub(/^[^{]*\{/, "", l); sub(/\}$/, "", l); printf "%s%s=%s", sep, l, $2; sep = "," } END { if (!sep) printf "none" }' <<<"$metrics"; }
fastpath="supported=$(metric bulkhead_fastpath_supported) handed_off=$(metric bulkhead_fastpath_handed_off_total) failures=$(labelled bulkhead_fastpath_handoff_failures_total)"
fplog="$(grep -a -o -E '(fast path [a-z][^"]*)' "$work/console.log" | head -n 1 || true)"
dnscheck="queries=$(labelled bulkhead_dns_queries_total) check=$(labelled bulkhead_dns_check_events_total)"
echo "boot-test: fast path: $fastpath; daemon log: ${fplog:-nothing}"
echo "boot-test: DNS check: $dnscheck"

result PASS "/readyz 200 $(secs "$ready_ms") s after qemu started (units reported active after $(secs "$units_ms") s), permitted flow forwarded and masqueraded, denied flow stopped, flow permitted by name (TLS) forwarded and masqueraded, decisions allowed=$allowed denied=$denied_n; fast path: $fastpath ($fplog); DNS: $dnscheck"
