#!/usr/bin/env bash
# Regenerates pkg/luks2/testdata/cryptsetup-*.hdr.gz, the seed headers of
# FuzzRead: headers made by cryptsetup (luksFormat, luksAddKey, token import,
# luksKillSlot), cut to the two 16 KiB header copies. Needs cryptsetup-bin;
# works on regular files, no root. Passphrases go through key files.
set -euo pipefail
out="$(cd "$(dirname "$0")/.." && pwd)/pkg/luks2/testdata"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'seed-passphrase' >"$tmp/key"
printf 'second-passphrase' >"$tmp/key2"
fast=(--pbkdf-force-iterations 1000)
make_img() { truncate -s 20M "$tmp/$1.img"; }
cut_hdr() { head -c 32768 "$tmp/$1.img" | gzip -9n >"$out/cryptsetup-$1.hdr.gz"; }

make_img pbkdf2
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 "${fast[@]}" --key-file "$tmp/key" "$tmp/pbkdf2.img"
cut_hdr pbkdf2

make_img argon2id-tokens
cryptsetup luksFormat -q --type luks2 --pbkdf argon2id --pbkdf-memory 32 --pbkdf-force-iterations 4 \
  --sector-size 4096 --label seed --subsystem fuzz --key-file "$tmp/key" "$tmp/argon2id-tokens.img"
cryptsetup luksAddKey -q --pbkdf pbkdf2 "${fast[@]}" --hash sha512 --key-file "$tmp/key" \
  "$tmp/argon2id-tokens.img" "$tmp/key2"
echo '{"type":"atrest","keyslots":["1"],"kms":"local","key_version":1}' |
  cryptsetup token import --token-id 3 "$tmp/argon2id-tokens.img"
cryptsetup config --priority prefer --key-slot 1 "$tmp/argon2id-tokens.img"
cut_hdr argon2id-tokens

make_img killed
cryptsetup luksFormat -q --type luks2 --pbkdf argon2i --pbkdf-memory 32 --pbkdf-force-iterations 4 \
  --key-file "$tmp/key" "$tmp/killed.img"
cryptsetup luksAddKey -q --pbkdf pbkdf2 "${fast[@]}" --key-file "$tmp/key" "$tmp/killed.img" "$tmp/key2"
cryptsetup luksKillSlot -q "$tmp/killed.img" 0
cut_hdr killed

make_img luks1
cryptsetup luksFormat -q --type luks1 --pbkdf-force-iterations 1000 --key-file "$tmp/key" "$tmp/luks1.img"
head -c 4096 "$tmp/luks1.img" | gzip -9n >"$out/cryptsetup-luks1.hdr.gz"
ls -l "$out"
