#!/usr/bin/env bash
# The main job on the embedded default, end to end: an image file on a loop
# device, formatted with the embedded default (the TPM where the machine
# has one, else the local keystore), status, rekey, status again,
# and - where the kernel has device-mapper - open, a filesystem, a file,
# close, reopen, read. Everything lives in a temporary directory with its
# own configuration; the machine's /etc/atrest is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "demo: needs root (loop devices); run: sudo make demo" >&2
  exit 1
fi
bin=${ATREST:-$PWD/bin/atrest}
work=$(mktemp -d /tmp/atrest-demo.XXXXXX)
name=atrest-demo-$$
loop=""
mnt="$work/mnt"
cleanup() {
  set +e
  mountpoint -q "$mnt" 2>/dev/null && umount "$mnt"
  "$bin" -c "$work/atrest.yaml" close "$name" >/dev/null 2>&1
  [ -n "$loop" ] && losetup -d "$loop"
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/atrest.yaml" <<CONF
# The embedded default (no kms: line): the machine's TPM where it has one
# (a KEK sealed by it, docs/tpm.md), else a local keystore (docs/kms.md
# says what each protects).
local:
  keystore: $work/kek
state_dir: $work/state
recovery:
  mode: print
CONF
chmod 600 "$work/atrest.yaml"
atrest() { echo "+ atrest $*" >&2; "$bin" -c "$work/atrest.yaml" "$@"; }

truncate -s 256M "$work/disk.img"
loop=$(losetup --find --show "$work/disk.img")
echo "demo: $work/disk.img is $loop"

atrest format "$loop" --name "$name"
atrest status
atrest rekey "$name"
atrest status --long

set +e
atrest open "$name" 2>"$work/open.err"
rc=$?
set -e
if [ $rc = 14 ]; then
  echo "demo: no device-mapper in this kernel, so open/write/close is skipped here; the real-kernel tier runs it (make vm, docs/testing.md)"
  exit 0
fi
cat "$work/open.err" >&2
[ $rc = 0 ] || exit $rc
mkfs.ext4 -q "/dev/mapper/$name"
mkdir -p "$mnt"
mount "/dev/mapper/$name" "$mnt"
echo "written through dm-crypt at $(date -u)" >"$mnt/hello.txt"
umount "$mnt"
atrest close "$name"
atrest rekey "$name"
atrest open "$name"
mount "/dev/mapper/$name" "$mnt"
echo "demo: read back after close, rekey and reopen: $(cat "$mnt/hello.txt")"
umount "$mnt"
atrest close "$name"
atrest status
