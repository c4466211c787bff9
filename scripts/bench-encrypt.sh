#!/usr/bin/env bash
# Encryption in place (issue 17): `atrest encrypt` vs `cryptsetup reencrypt
# --encrypt --reduce-device-size 32M --sector-size 4096` of the same 1 GiB
# ext4 (200 MiB of files) on a 1 GiB + 32 MiB loop device, backed by a file
# in DIR (default /var/tmp: disk; /dev/shm: memory). Needs root,
# cryptsetup-bin and e2fsprogs. Prints the wall and CPU time of each.
#   usage: scripts/bench-encrypt.sh [DIR] [ATREST_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/var/tmp}
w=$(mktemp -d)
trap 'umount -q "$w/mnt" 2>/dev/null || true; [ -n "${loop:-}" ] && losetup -d "$loop" 2>/dev/null; rm -rf "$w" "$dir/atrest-bench-encrypt.img"' EXIT
bin=${2:-$w/atrest}
[ -n "${2:-}" ] || go build -o "$bin" ./cmd/atrest
printf 'kms: local\nlocal:\n  keystore: %s/kek\nstate_dir: %s/state\nrecovery:\n  mode: none\n' "$w" "$w" > "$w/atrest.yaml"
img=$dir/atrest-bench-encrypt.img
head -c 200M /dev/urandom > "$w/data"
mkdir "$w/mnt"
# device: a fresh loop device with an ext4 of 1 GiB holding the data.
device() {
  rm -f "$img"; truncate -s $((1024 + 32))M "$img"
  loop=$(losetup -f --show "$img")
  mkfs.ext4 -q -F "$loop" 1048576
  mount "$loop" "$w/mnt"; cp "$w/data" "$w/mnt/"; umount "$w/mnt"; sync
}
device
/usr/bin/time -f "atrest encrypt: %e s wall, %U s user, %S s system" \
  "$bin" -c "$w/atrest.yaml" encrypt "$loop" --name "benchenc$$" >/dev/null
losetup -d "$loop"
device
printf 'bench' > "$w/pass"
/usr/bin/time -f "cryptsetup reencrypt --encrypt: %e s wall, %U s user, %S s system" \
  cryptsetup reencrypt --encrypt --batch-mode --reduce-device-size 32M --sector-size 4096 \
  --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$w/pass" "$loop" >/dev/null
losetup -d "$loop"; loop=
