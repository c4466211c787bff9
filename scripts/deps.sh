#!/usr/bin/env bash
# Installs the Debian packages the test tiers need (run as root; `make test`
# and `make deps` call it). Nothing is installed when everything is there.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# Everything the test tiers need from Debian (see docs/testing.md):
#   cryptsetup-bin    the interop oracle for the LUKS2 engine
#   e2fsprogs, util-linux  mkfs.ext4, blkid, losetup on the host
#   qemu-system-x86, busybox-static, kmod  the real-kernel tier
#   dmsetup           the guest's view of tables (dmsetup table --showkeys)
#   debootstrap, debian-archive-keyring  the booted-Debian tier's root image
# The real-kernel tier also downloads the guest kernel itself (apt-get
# download, cached under ~/.cache/atrest/vm), see integration/vm; the
# booted-Debian tier builds its image with debootstrap from the same Debian
# archive (cached under ~/.cache/atrest/boot), see integration/boot.
pkgs=(cryptsetup-bin e2fsprogs util-linux qemu-system-x86 busybox-static kmod dmsetup debootstrap debian-archive-keyring ca-certificates)
#   the signature oracles of pkg/blockdev (each makes what atrest must detect;
#   blkid, wipefs, unshare come with util-linux)
pkgs+=(xfsprogs btrfs-progs dosfstools ntfs-3g exfatprogs f2fs-tools fdisk gdisk
  lvm2 mdadm bcache-tools xorriso)
#   the Debian package's test (packaging/deb): lintian; the alerting rules
#   test (monitoring/): promtool, which Debian ships in prometheus (the
#   server comes with it; the tests run only promtool)
pkgs+=(lintian prometheus)
#   make bench's comparison with clevis and tang (scripts/bench-unlock.sh)
pkgs+=(clevis clevis-luks tang socat curl)
#   the KMIP backend's real server (pykmip-server, internal/testutil/kmiptest)
pkgs+=(python3-pykmip)
#   the TPM2 tier: a software TPM on loopback (internal/testutil/swtpmtest),
#   the TCTI systemd-cryptenroll --tpm2-device=swtpm:... loads, tpm2-tools
pkgs+=(swtpm swtpm-tools libtss2-tcti-swtpm0 tpm2-tools)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing Debian packages: ${missing[*]}; run as root (sudo make test) to install them" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
for i in 1 2 3; do apt-get update -qq && break || sleep 5; done
apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
