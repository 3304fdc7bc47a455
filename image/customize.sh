#!/usr/bin/env bash
# mmdebstrap's customize hook for image/build.sh: puts Bulkhead and its host configuration into
# the root file system at $1. Reads BH_BIN, BH_IMAGE, BH_CONFIGS and BH_UUID from build.sh.
set -euo pipefail
root="$1"
files="$BH_IMAGE/files"

install -D -m 0755 "$BH_BIN" "$root/usr/local/bin/bulkhead"

# The unprivileged user the daemon runs as (the unit grants it CAP_NET_ADMIN only).
chroot "$root" useradd --system --user-group --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin bulkhead
# The host's own user database does not know the group: give install(1) its number.
gid="$(chroot "$root" getent group bulkhead | cut -d: -f3)"

# Configuration: a log-only baseline that decides and logs everything and blocks nothing, so a
# gateway that boots without user data is safe to put behind route tables. User data replaces
# gateway.toml (and the policy's mode) on real deployments.
install -d -m 0750 -g "$gid" "$root/etc/bulkhead" "$root/etc/bulkhead/policies" \
    "$root/etc/bulkhead/webgroups"
install -m 0640 -g "$gid" "$BH_CONFIGS/policies/observe-first.toml" "$root/etc/bulkhead/policies/"
install -m 0640 -g "$gid" "$BH_CONFIGS/webgroups/ai-providers.toml" "$root/etc/bulkhead/webgroups/"
install -m 0640 -g "$gid" "$files/gateway.toml" "$root/etc/bulkhead/gateway.toml"

# systemd units: the gateway and the privileged one-shot set-up it waits for.
install -m 0644 "$BH_IMAGE/bulkhead.service" "$root/etc/systemd/system/bulkhead.service"
install -m 0644 "$BH_IMAGE/bulkhead-setup.service" "$root/etc/systemd/system/bulkhead-setup.service"
install -D -m 0755 "$files/bulkhead-setup" "$root/usr/local/lib/bulkhead/bulkhead-setup"

# Kernel: modules, sysctls, the NAT ruleset.
install -m 0644 "$files/modules-load.conf" "$root/etc/modules-load.d/bulkhead.conf"
install -m 0644 "$files/sysctl.conf" "$root/etc/sysctl.d/60-bulkhead.conf"
install -m 0755 "$files/nftables.conf" "$root/etc/nftables.conf"
install -d -m 0755 "$root/etc/nftables.d"

# Networking: cloud-init renders networkd configuration for the boot interface; interfaces
# attached later (the static interface on AWS) get DHCP from this file.
install -m 0644 "$files/secondary.network" "$root/etc/systemd/network/90-bulkhead-secondary.network"
install -m 0644 "$files/cloud.cfg" "$root/etc/cloud/cloud.cfg.d/90-bulkhead.cfg"
# Name resolution: systemd-resolved with the resolvers DHCP or cloud-init give (on AWS, the VPC's),
# and no fallback to public resolvers a gateway has no business asking. mmdebstrap copied the
# build host's /etc/resolv.conf into the tree: it is replaced by resolved's stub (the gateway's
# DNS check of names and the AWS CLI both read it).
install -d -m 0755 "$root/etc/systemd/resolved.conf.d"
install -m 0644 "$files/resolved.conf" "$root/etc/systemd/resolved.conf.d/90-bulkhead.conf"
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
# chrony: the Amazon Time Sync Service first (link-local, no egress needed), Debian's pool after.
sed -i '1i server 169.254.169.123 prefer iburst minpoll 4 maxpoll 4' "$root/etc/chrony/chrony.conf"

chroot "$root" systemctl enable bulkhead.service bulkhead-setup.service nftables.service \
    systemd-networkd.service systemd-resolved.service chrony.service >/dev/null
# No local console login on a gateway: the serial console shows the boot, nothing more.
chroot "$root" systemctl mask serial-getty@ttyS0.service getty@tty1.service >/dev/null

echo "bulkhead-gateway" > "$root/etc/hostname"
chmod 0644 "$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
echo "UUID=$BH_UUID / ext4 errors=remount-ro,noatime 0 1" > "$root/etc/fstab"

# Kernel and initramfs links at / (GRUB's configuration boots /vmlinuz and /initrd.img).
kernel="$(cd "$root/boot" && ls vmlinuz-* | sort -V | tail -n 1)"
ln -sf "boot/$kernel" "$root/vmlinuz"
ln -sf "boot/initrd.img-${kernel#vmlinuz-}" "$root/initrd.img"
[ -f "$root/boot/initrd.img-${kernel#vmlinuz-}" ] || { echo "no initramfs for $kernel" >&2; exit 1; }

# Each instance gets its own identity at first boot.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root/etc/ssh/ssh_host_"* 
chroot "$root" apt-get clean
rm -rf "$root/var/lib/apt/lists/"*
