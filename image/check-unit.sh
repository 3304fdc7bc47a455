#!/usr/bin/env bash
# Checks image/bulkhead.service with systemd's own tools:
#   - `systemd-analyze verify` must pass;
#   - `systemd-analyze security --offline=true` must score at most MAX_EXPOSURE (default 2.5).
# Skips, saying why, when systemd-analyze (systemd 250 or newer, for --offline) is missing.
#
# verify checks that the commands the unit runs exist, so it runs against a scratch root that
# holds the unit, systemd's own units, kill(1) and the bulkhead binary: BULKHEAD_BIN, else
# target/release/bulkhead or target/debug/bulkhead, else an executable stand-in (the unit is what
# is checked here, not the binary). As a control, a copy of the unit with an unknown key and a
# missing binary must fail verify, so a verify that checks nothing is noticed.
#
# Usage: image/check-unit.sh            (from anywhere; exit 0 pass or skip, 1 failure)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
unit="$here/bulkhead.service"
max="${MAX_EXPOSURE:-2.5}"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "SKIPPED check-unit: systemd-analyze is not installed (apt-get install systemd)"
    exit 0
fi
version="$(systemd-analyze --version | awk 'NR==1 {print $2}')"
if [ "${version:-0}" -lt 250 ] 2>/dev/null; then
    echo "SKIPPED check-unit: systemd $version is older than 250 (no security --offline)"
    exit 0
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# A scratch root: merged /usr as on Debian, systemd's units for the dependencies.
make_root() {
    local root="$1"
    mkdir -p "$root/etc/systemd/system" "$root/usr/local/bin" "$root/usr/bin" "$root/usr/lib/systemd"
    ln -s usr/bin "$root/bin"
    ln -s usr/lib "$root/lib"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
    cp /bin/kill "$root/usr/bin/kill"
}

root="$scratch/root"
make_root "$root"
bin="${BULKHEAD_BIN:-}"
for candidate in "${CARGO_TARGET_DIR:-$repo/target}/release/bulkhead" \
                 "${CARGO_TARGET_DIR:-$repo/target}/debug/bulkhead"; do
    if [ -z "$bin" ] && [ -x "$candidate" ]; then bin="$candidate"; fi
done
if [ -n "$bin" ]; then
    cp "$bin" "$root/usr/local/bin/bulkhead"
    echo "check-unit: verifying with $bin"
else
    printf '#!/bin/sh\nexit 0\n' > "$root/usr/local/bin/bulkhead"
    chmod 0755 "$root/usr/local/bin/bulkhead"
    echo "check-unit: no bulkhead binary built; verifying with an executable stand-in"
fi
cp "$unit" "$root/etc/systemd/system/bulkhead.service"

failed=0
echo "==> systemd-analyze verify bulkhead.service (systemd $version)"
if ! systemd-analyze verify --root="$root" "$root/etc/systemd/system/bulkhead.service"; then
    echo "FAIL: systemd-analyze verify"
    failed=1
fi

# The control: an unknown key and a missing ExecStart binary must both be reported.
bad="$scratch/bad"
make_root "$bad"
sed -e 's/^NoNewPrivileges=yes$/NoNewPrivileges=yes\nNoSuchKey=yes/' "$unit" \
    > "$bad/etc/systemd/system/bulkhead.service"
if out="$(systemd-analyze verify --root="$bad" "$bad/etc/systemd/system/bulkhead.service" 2>&1)" \
    || ! grep -q 'NoSuchKey' <<<"$out" || ! grep -q 'not executable' <<<"$out"; then
    echo "FAIL: verify did not report a broken copy of the unit:"
    echo "$out"
    failed=1
else
    echo "verify control: a broken copy is reported, as it should be"
fi

echo "==> systemd-analyze security --offline=true bulkhead.service (at most $max)"
report="$(systemd-analyze security --offline=true --root="$root" bulkhead.service 2>&1 || true)"
echo "$report" | grep -E '^✗' || true
score="$(sed -n 's/.*Overall exposure level for bulkhead.service: \([0-9.]*\).*/\1/p' <<<"$report")"
if [ -z "$score" ]; then
    echo "FAIL: no exposure level in the output:"
    echo "$report"
    failed=1
else
    echo "exposure level: $score (limit $max)"
    if ! awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }'; then
        echo "FAIL: exposure level $score is above $max"
        failed=1
    fi
fi

if [ "$failed" = 0 ]; then
    echo "check-unit: 2 passed, 0 failed"
else
    echo "check-unit: failed"
fi
exit "$failed"
