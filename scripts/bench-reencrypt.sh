#!/usr/bin/env bash
# Offline re-encryption figures (issue 17), in one run (needs root and
# cryptsetup-bin):
#   userspace AES-XTS per core: pkg/luks2 (the data path's decrypt+encrypt
#     of a 64 MiB hotzone, one pass counted per byte) vs golang.org/x/crypto/xts
#     vs `openssl speed -evp aes-256-xts`; target: pkg/luks2 >= 2 GB/s per core
#     for one XTS pass;
#   re-encryption of a 1 GiB data area with atrest vs `cryptsetup reencrypt`
#     on the same loop device, backed by disk and (when /dev/shm exists) by
#     memory, where the tools' own speed shows rather than the disk's;
#     medians of BENCH_ITERATIONS (default 3) whole runs.
# Exit status 1 when the crypto target is missed.
set -euo pipefail
cd "$(dirname "$0")/.."
crypto=$(go test -run '^$' -bench 'Recrypt|XTS4096' -benchtime 10x -count 1 ./pkg/luks2/)
echo "$crypto" | grep -E '^(Benchmark|cpu)'
n=${BENCH_ITERATIONS:-3}
# rate: MB/s of 1 GiB from a benchmark's ms/median.
rate() { echo "$1" | awk -v b="$2" '$1 ~ "^"b"(-[0-9]+)?$" { for (i = 1; i < NF; i++) if ($(i+1) == "ms/median") printf "%.0f", 1073.741824 / ($i / 1000) }'; }
mbs() { echo "$1" | awk -v b="$2" '$1 ~ "^"b"(-[0-9]+)?$" { for (i = 1; i < NF; i++) if ($(i+1) == "MB/s") print $i }'; }
one=$(mbs "$crypto" BenchmarkRecrypt/luks2-cores-1)
all=$(mbs "$crypto" "BenchmarkRecrypt/luks2-cores-$(nproc)")
ref=$(mbs "$crypto" BenchmarkRecrypt/x-crypto-xts-cores-1)
sums=$(mbs "$crypto" "BenchmarkRecrypt/checksums-cores-$(nproc)")
ossl=$(openssl speed -evp aes-256-xts -seconds 2 -bytes 65536 2>/dev/null | awk '/^AES-256-XTS/ { sub("k", "", $2); printf "%.0f", $2 * 1000 / 1e6 }')
echo
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
printf 'AES-XTS, one pass, MB/s per core: pkg/luks2 %.0f, x/crypto/xts %.0f, openssl %s\n' "$(awk -v v="$one" 'BEGIN { print 2 * v }')" "$(awk -v v="$ref" 'BEGIN { print 2 * v }')" "$ossl"
printf 're-encryption crypto (decrypt+encrypt), MB/s of data: 1 core %s, %s cores %s; checksums %s\n' "$one" "$(nproc)" "$all" "$sums"
verdict=0
if awk -v v="$one" 'BEGIN { exit !(2 * v >= 2000) }'; then echo "  ok    XTS >= 2 GB/s per core"; else echo "  MISS  XTS >= 2 GB/s per core"; verdict=1; fi
for dir in "" /dev/shm; do
  [ -n "$dir" ] && [ ! -d "$dir" ] && continue
  out=$(ATREST_BENCH_DIR=$dir go test -run '^$' -bench 'Reencrypt1GiB' -benchtime "${n}x" -count 1 ./integration/luks2/)
  echo "$out" | grep -E '^Benchmark'
  printf 're-encrypt 1 GiB (%s), median of %s: atrest %.0f MB/s, cryptsetup reencrypt %.0f MB/s\n' "${dir:-disk}" "$n" \
    "$(rate "$out" BenchmarkReencrypt1GiB/atrest)" "$(rate "$out" BenchmarkReencrypt1GiB/cryptsetup)"
done
exit $verdict
