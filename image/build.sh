#!/usr/bin/env bash
# Builds the Bulkhead gateway VM image: OUT_DIR/bulkhead.raw and OUT_DIR/bulkhead.qcow2.
#
#   sudo image/build.sh OUT_DIR
#
# A bootable Debian (bookworm) image, made from Debian's packages with mmdebstrap, holding:
# the `bulkhead` binary and its hardened unit (image/bulkhead.service), the sysctls and kernel
# modules the data path needs, an nftables ruleset that masquerades what leaves the gateway,
# cloud-init with the NoCloud and EC2 data sources, networkd and resolved, chrony, the AWS CLI
# (for the certificates in SSM / Secrets Manager), and GRUB for BIOS boot on a virtio or NVMe disk.
# See image/README.md.
#
# Needs root on Debian (or a derivative) with: mmdebstrap, qemu-img (qemu-utils), sfdisk
# (fdisk), mke2fs 1.43+ (e2fsprogs), grub-mkimage and GRUB's BIOS modules (grub-pc-bin), and access
# to a Debian mirror. Missing tools are listed together with the package to install.
#
# Environment:
#   BULKHEAD_BIN     the bulkhead binary to install (default: target/release/bulkhead, built
#                    with `cargo build --release -p bulkhead-gateway` when cargo is present)
#   DEBIAN_SUITE     default bookworm
#   DEBIAN_MIRROR    default http://deb.debian.org/debian
#   IMAGE_SIZE       raw disk size, default 3G (cloud-init grows the root file system at boot)
#   EXTRA_PACKAGES   more Debian packages, comma-separated
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
size="${IMAGE_SIZE:-3G}"

die() { echo "build.sh: $*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }

[ $# -eq 1 ] || die "usage: $0 OUT_DIR"
out="$1"

# --- what is needed ----------------------------------------------------------------------------
missing=()
[ "$(id -u)" = 0 ] || missing+=("root (run with sudo: mmdebstrap needs to chroot and own files as root)")
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 (apt-get install $2)"); }
need mmdebstrap mmdebstrap
need qemu-img qemu-utils
need sfdisk fdisk
need mke2fs e2fsprogs
need grub-mkimage grub-pc-bin
[ -f /usr/lib/grub/i386-pc/boot.img ] || missing+=("/usr/lib/grub/i386-pc (apt-get install grub-pc-bin)")
if command -v mke2fs >/dev/null 2>&1; then
    usage="$(mke2fs -h 2>&1 || true)"
    grep -q -- '-d root-directory' <<<"$usage" || missing+=("mke2fs with -d (e2fsprogs 1.43 or newer)")
fi

bin="${BULKHEAD_BIN:-}"
if [ -z "$bin" ]; then
    bin="${CARGO_TARGET_DIR:-$repo/target}/release/bulkhead"
    if [ ! -x "$bin" ] && command -v cargo >/dev/null 2>&1; then
        say "building bulkhead (cargo build --release -p bulkhead-gateway)"
        (cd "$repo" && cargo build --release -p bulkhead-gateway)
    fi
fi
[ -x "$bin" ] || missing+=("the bulkhead binary: set BULKHEAD_BIN, or build it with cargo build --release -p bulkhead-gateway")

if [ ${#missing[@]} -gt 0 ]; then
    echo "build.sh: cannot build the image; missing:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi
if ! "$bin" --version >/dev/null 2>&1; then
    die "$bin does not run here (is it built for this architecture?)"
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/bulkhead-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
uuid="$(cat /proc/sys/kernel/random/uuid)"
start=$(date +%s)

# --- the root file system ----------------------------------------------------------------------
packages=(
    systemd-sysv systemd-resolved udev dbus kmod iproute2 nftables procps less ca-certificates netbase
    linux-image-cloud-amd64 initramfs-tools
    cloud-init cloud-guest-utils e2fsprogs
    chrony awscli curl
)
if [ -n "${EXTRA_PACKAGES:-}" ]; then
    IFS=, read -r -a extra <<<"$EXTRA_PACKAGES"
    packages+=("${extra[@]}")
fi
include="$(IFS=,; echo "${packages[*]}")"

say "mmdebstrap $suite from $mirror"
# The files the image gets, handed to the customize hook through the environment.
export BH_BIN="$bin" BH_IMAGE="$here" BH_CONFIGS="$repo/configs" BH_UUID="$uuid"
mmdebstrap --variant=minbase --include="$include" \
    --aptopt='Acquire::Retries "3"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --customize-hook='"$BH_IMAGE/customize.sh" "$1"' \
    "$suite" "$rootfs" \
    "deb $mirror $suite main" \
    "deb $mirror $suite-updates main" \
    "deb http://security.debian.org/debian-security $suite-security main"

# --- the disk: one partition from 1 MiB, ext4 built from the tree, GRUB in the MBR gap -------
say "GRUB modules and configuration"
mkdir -p "$rootfs/boot/grub/i386-pc"
cp /usr/lib/grub/i386-pc/*.mod /usr/lib/grub/i386-pc/*.lst "$rootfs/boot/grub/i386-pc/"
cat > "$rootfs/boot/grub/grub.cfg" <<EOF
# Written by image/build.sh. /vmlinuz and /initrd.img follow kernel upgrades.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
search --no-floppy --fs-uuid --set=root $uuid
menuentry 'Debian GNU/Linux (Bulkhead gateway)' {
    linux /vmlinuz root=UUID=$uuid ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0 nvme_core.io_timeout=4294967295
    initrd /initrd.img
}
EOF

raw="$work/bulkhead.raw"
say "disk image ($size)"
truncate -s "$size" "$raw"
bytes=$(stat -c %s "$raw")
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk --quiet "$raw"
# mke2fs writes the file system straight into the partition's byte range: no loop device.
mke2fs -q -F -t ext4 -L bulkhead-root -U "$uuid" -d "$rootfs" -E offset=1048576 \
    "$raw" "$(( (bytes - 1048576) / 1024 ))k"

# What grub-install does for a BIOS disk, done on the image file: the boot sector's code (the
# partition table and disk signature stay), then core.img from sector 1, inside the 1 MiB gap.
# boot.img reads core.img from sector 1 and core.img's first sector the rest from sector 2, as
# grub-mkimage lays it out, so nothing else needs patching but the drive check (below).
grubdir="$work/grub"
mkdir -p "$grubdir"
grub-mkimage -O i386-pc -o "$grubdir/core.img" -p '(hd0,msdos1)/boot/grub' \
    biosdisk part_msdos ext2 search_fs_uuid normal linux configfile serial terminal echo test
core_sectors=$(( ($(stat -c %s "$grubdir/core.img") + 511) / 512 ))
[ "$core_sectors" -lt 2047 ] || die "core.img ($core_sectors sectors) does not fit before the partition"
dd if=/usr/lib/grub/i386-pc/boot.img of="$raw" bs=440 count=1 conv=notrunc status=none
# On a hard disk, boot from the drive the BIOS says (grub-setup's "drive check" workaround:
# two NOPs over the jump at 0x66).
printf '\x90\x90' | dd of="$raw" bs=1 seek=$((0x66)) conv=notrunc status=none
dd if="$grubdir/core.img" of="$raw" bs=512 seek=1 conv=notrunc status=none

say "qcow2"
qemu-img convert -f raw -O qcow2 -c "$raw" "$work/bulkhead.qcow2"
mv "$raw" "$out/bulkhead.raw"
mv "$work/bulkhead.qcow2" "$out/bulkhead.qcow2"
{
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - start )) s"
    echo "suite: $suite"
    echo "bulkhead: $("$bin" --version)"
    echo "kernel: $(cd "$rootfs/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//')"
    echo "root uuid: $uuid"
    echo "sha256:"
    (cd "$out" && sha256sum bulkhead.raw bulkhead.qcow2)
} > "$out/bulkhead.manifest"
cat "$out/bulkhead.manifest"
say "done: $out/bulkhead.raw, $out/bulkhead.qcow2"
