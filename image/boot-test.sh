#!/usr/bin/env bash
# Boots the gateway image in qemu and checks it end to end:
#
#   sudo image/boot-test.sh IMAGE_DIR        (IMAGE_DIR holds bulkhead.qcow2 from build.sh)
#
#  namespace wl              VM (the image, booted from a copy-on-write overlay)      namespace net
#  10.77.1.2  --- tap ---  eth1 10.77.1.1 | bulkhead, bulk0 | eth0 198.18.0.2  --- tap ---  198.18.0.1
#  (a workload)                                                                      (the "internet":
#                                                                                     HTTP on 8080, 8081)
#
# A NoCloud seed (cloud-init) gives the VM its addresses, a gateway.toml diverting eth0 and eth1,
# a policy that permits the workload to 198.18.0.1:8080 only, and a setup.env (so
# bulkhead-setup.service runs too). The test then checks that:
#   1. bulkhead.service (and bulkhead-setup.service) are active (reported on the serial console);
#   2. /readyz answers 200 from outside the VM;
#   3. the permitted connection completes, and arrives masqueraded (from 198.18.0.2);
#   4. the denied one does not complete;
#   5. the gateway counted both decisions (bulkhead_decisions_total, allowed and denied).
# The last lines printed say the outcome, the accelerator and the duration; BOOT_TEST_RESULT
# (a file path) gets them too.
#
# KVM when /dev/kvm works, else software emulation (TCG: slower, same result). Needs root,
# qemu-system-x86_64, qemu-img, genisoimage (or xorriso), iproute2, curl and python3. All traffic
# stays in the namespaces and the VM this script creates; everything is removed at exit.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
[ $# -eq 1 ] || { echo "usage: $0 IMAGE_DIR" >&2; exit 2; }
base="$(cd "$1" && pwd)/bulkhead.qcow2"
timeout_s="${BOOT_TIMEOUT:-900}"

missing=()
[ "$(id -u)" = 0 ] || missing+=("root (namespaces and tap devices)")
for t in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils ip:iproute2 curl:curl python3:python3; do
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
qemu-img create -q -f qcow2 -F qcow2 -b "$base" "$work/disk.qcow2"
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

      [[rules]]
      name = "workloads-to-test-server-8080"
      priority = 100
      src = ["workloads"]
      dst = ["test-server"]
      protocol = "tcp"
      ports = ["8080"]
      action = "permit"
      log = true
  - path: /etc/bulkhead/setup.env
    permissions: "0600"
    content: |
      BULKHEAD_INSIDE_CIDRS="10.77.1.0/24"
runcmd:
  - [sh, -c, 'setsid sh -c "while :; do echo BOOT-TEST bulkhead=\$(systemctl is-active bulkhead.service) setup=\$(systemctl is-active bulkhead-setup.service) user=\$(ps -o user= -C bulkhead | head -n 1); sleep 3; done" > /dev/ttyS0 2>&1 < /dev/null &']
  - [sh, -c, 'sleep 20; journalctl -u bulkhead.service -u bulkhead-setup.service --no-pager -n 40 > /dev/ttyS0 2>&1']
EOF
(cd "$work/seed" && $mkiso -quiet -output "$work/seed.iso" -volid cidata -joliet -rock \
    user-data meta-data network-config)

# --- the namespaces; qemu makes the tap devices in its own, and they are moved out -------------
for ns in "$ns_q" "$ns_wl" "$ns_net"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done

start_qemu() {
    # The host's CPU under KVM (qemu's default model asks for features a nested hypervisor
    # may not offer), the most capable emulated one under TCG.
    local cpu=max
    [ "$1" = kvm ] && cpu=host
    ip netns exec "$ns_q" qemu-system-x86_64 -accel "$1" -cpu "$cpu" -m 1024 -smp 2 \
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
    kill -0 "$qemu_pid" 2>/dev/null
}
accel=kvm
if [ ! -w /dev/kvm ] || ! start_qemu kvm; then
    [ -w /dev/kvm ] && { echo "KVM failed:"; cat "$work/qemu.log"; }
    accel=tcg
    start_qemu tcg || { cat "$work/qemu.log"; result FAIL "qemu did not start"; }
fi
echo "boot-test: qemu running with $accel"

ip -n "$ns_q" link set tapwl netns "$ns_wl"
ip -n "$ns_q" link set tapnet netns "$ns_net"
ip -n "$ns_wl" addr add 10.77.1.2/24 dev tapwl
ip -n "$ns_wl" link set tapwl up
ip -n "$ns_wl" route add default via 10.77.1.1
ip -n "$ns_net" addr add 198.18.0.1/24 dev tapnet
ip -n "$ns_net" link set tapnet up

for port in 8080 8081; do
    ip netns exec "$ns_net" python3 -m http.server "$port" --bind 198.18.0.1 --directory "$work/seed" \
        > "$work/server-$port.log" 2>&1 &
    pids+=($!)
done

# --- 1. the units --------------------------------------------------------------------------------
echo "boot-test: waiting for the units (timeout ${timeout_s} s)"
deadline=$(( $(date +%s) + timeout_s ))
until grep -q 'BOOT-TEST bulkhead=active setup=active' "$work/console.log" 2>/dev/null; do
    kill -0 "$qemu_pid" 2>/dev/null || result FAIL "qemu exited"
    [ "$(date +%s)" -lt "$deadline" ] || result FAIL "bulkhead.service not active within ${timeout_s} s"
    sleep 3
done
booted=$(( $(date +%s) - started ))
user="$(grep -a -o 'BOOT-TEST bulkhead=active setup=active user=[a-z]*' "$work/console.log" | tail -n 1)"
echo "boot-test: units active after $booted s ($user)"
case "$user" in *user=bulkhead) ;; *) result FAIL "the daemon does not run as user bulkhead: $user" ;; esac

# --- 2. /readyz from outside ---------------------------------------------------------------------
ready="$(ip netns exec "$ns_net" curl -s -m 5 -o /dev/null -w '%{http_code}' http://198.18.0.2:9108/readyz || true)"
[ "$ready" = 200 ] || result FAIL "/readyz answered '$ready'"
echo "boot-test: /readyz 200"

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

# --- 5. the gateway's own account ---------------------------------------------------------------
metrics="$(ip netns exec "$ns_net" curl -s -m 5 http://198.18.0.2:9108/metrics)"
count() { awk -v a="$1" '$1 ~ "^bulkhead_decisions_total\\{" && $1 ~ "action=\"" a "\"" { s += $2 } END { print s + 0 }' <<<"$metrics"; }
allowed="$(count allowed)" denied_n="$(count denied)"
[ "$allowed" -ge 1 ] && [ "$denied_n" -ge 1 ] \
    || result FAIL "decisions counted: allowed $allowed, denied $denied_n"

result PASS "units active after ${booted} s, /readyz 200, permitted flow forwarded and masqueraded, denied flow stopped, decisions allowed=$allowed denied=$denied_n"
