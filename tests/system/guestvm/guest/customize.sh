#!/bin/bash
# mmdebstrap --customize-hook for the guestagent system-test image.
# Usage: customize.sh ROOTFS AUTHORIZED_KEY_FILE
# Runs on the host as root; mmdebstrap has /proc, /sys and /dev mounted in the chroot.
# Nothing here knows about the agent: the agent is installed later, per build of the
# project, by `make install DESTDIR=...` on a copy of this rootfs (see guestvm/image.py).
set -euo pipefail
root=$1
pubkey=$2
here=$(cd "$(dirname "$0")" && pwd)

echo guestvm > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tguestvm\n' > "$root/etc/hosts"
printf '/dev/vda\t/\text4\tdefaults,errors=remount-ro\t0\t1\n' > "$root/etc/fstab"
# Empty machine-id: the first boot of every overlay generates its own.
: > "$root/etc/machine-id"
# No DNS in the sandbox network (slirp runs with restrict=on).
: > "$root/etc/resolv.conf"

install -m 0644 "$here/10-slirp.network" "$root/etc/systemd/network/10-slirp.network"
install -m 0644 "$here/guestvm-ready.service" "$root/etc/systemd/system/guestvm-ready.service"

# root: key-only ssh; passwordless console login (a throw-away test VM).
chroot "$root" passwd --delete root >/dev/null
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$pubkey" "$root/root/.ssh/authorized_keys"
cat > "$root/etc/ssh/sshd_config.d/guestvm.conf" <<'EOT'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxSessions 50
MaxStartups 50:30:100
EOT

chroot "$root" systemctl enable systemd-networkd.service ssh.service guestvm-ready.service >/dev/null 2>&1
# Nothing periodic or networked that could fire during a test.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
         man-db.timer dpkg-db-backup.timer systemd-timesyncd.service \
         systemd-networkd-wait-online.service; do
    chroot "$root" systemctl mask "$u" >/dev/null 2>&1 || true
done
# The journal on disk would survive a reboot: keep it, tests read the previous boot.
install -d "$root/var/log/journal"

# Slim the kernel: drop module trees a headless QEMU guest never loads.
for kdir in "$root"/lib/modules/*; do
    [ -d "$kdir/kernel" ] || continue
    for d in drivers/gpu drivers/media drivers/net/wireless drivers/infiniband \
             drivers/staging drivers/bluetooth drivers/iio drivers/isdn \
             drivers/net/ethernet drivers/usb/gadget sound net/wireless \
             net/mac80211 net/bluetooth; do
        rm -rf "${kdir:?}/kernel/$d"
    done
    chroot "$root" depmod -a "$(basename "$kdir")"
done
# Small initramfs: only what mounting /dev/vda needs.
echo 'MODULES=list' > "$root/etc/initramfs-tools/conf.d/guestvm.conf"
printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic > "$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -u -k all >/dev/null 2>&1

rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/tmp/*
