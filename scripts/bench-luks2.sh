#!/usr/bin/env bash
# Compares atrest's LUKS2 engine with cryptsetup on loop devices, in one run
# (needs root and cryptsetup-bin), and checks the targets of issue 2:
#   format of a 1 GiB loop device with one platform keyslot: median <= 50 ms
#     and <= 1/3 of `cryptsetup luksFormat --type luks2 --pbkdf pbkdf2
#     --pbkdf-force-iterations 1000` measured in the same run;
#   opening the PBKDF2-SHA512/1000 platform keyslot: median <= 2 ms.
# Figures are medians over N iterations (BENCH_ITERATIONS, default 30).
# Exit status 1 when a target is missed.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${BENCH_ITERATIONS:-30}
out=$(go test -run '^$' -bench 'Format1GiB|OpenPlatformKeyslot' -benchtime "${n}x" -count 1 ./integration/luks2/)
echo "$out" | grep -E '^(Benchmark|goos|goarch|cpu)'
median() { echo "$out" | awk -v b="$1" '$1 ~ "^"b"(-[0-9]+)?$" { for (i = 1; i < NF; i++) if ($(i+1) == "ms/median") print $i }'; }
fa=$(median BenchmarkFormat1GiB/atrest)
fc=$(median BenchmarkFormat1GiB/cryptsetup)
oa=$(median BenchmarkOpenPlatformKeyslot/atrest)
oc=$(median BenchmarkOpenPlatformKeyslot/cryptsetup)
echo
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
verdict=0
check() { # label value op limit
  if awk -v v="$2" -v l="$4" "BEGIN { exit !(v $3 l) }"; then echo "  ok    $1"; else echo "  MISS  $1"; verdict=1; fi
}
printf 'format 1 GiB:  atrest %s ms, cryptsetup %s ms (ratio %s)\n' "$fa" "$fc" "$(awk -v a="$fa" -v c="$fc" 'BEGIN { printf "%.3f", a / c }')"
check "format median <= 50 ms" "$fa" "<=" 50
check "format median <= cryptsetup/3 ($(awk -v c="$fc" 'BEGIN { printf "%.1f", c / 3 }') ms)" "$fa" "<=" "$(awk -v c="$fc" 'BEGIN { print c / 3 }')"
printf 'open platform keyslot:  atrest %s ms, cryptsetup open --test-passphrase %s ms (whole process)\n' "$oa" "$oc"
check "open median <= 2 ms" "$oa" "<=" 2
exit $verdict
