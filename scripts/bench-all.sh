#!/usr/bin/env bash
# Runs every comparison of issue 12 once and prints the ratios with their
# targets (needs root, a built test Vault and `make deps`):
#   keyslot    BenchmarkOpenKeyslots (pkg/luks2): CPU per keyslot in a
#              batch of 64, as an unlock opens them (the KDFs in SIMD
#              lanes), and of one; BenchmarkOpenPlatformKeyslot: one open alone
#   xts        BenchmarkAreaDecrypt (pkg/luks2) against x/crypto/xts and
#              `openssl speed -evp aes-256-xts` (16 KiB blocks)
#   unlock     BenchmarkUnlock/N (pkg/volume): N volumes' unlock work
#              (N = 64, and 1000 with BENCH_1000=1)
#   process    BenchmarkUnlockProcess/{1,64} (integration/cli): a cold
#              `atrest open --test` of 1 and 64 volumes through Vault
#              against clevis+tang pipelines (64 at once), whole processes
#   rewrap     BenchmarkRewrap (pkg/volume, in-process, with the Vault
#              requests) and BenchmarkRewrapAll (integration/cli,
#              `atrest rewrap --all --force` through the binary) for 256
#              and 1000 volumes
#   status     BenchmarkStatusNames/{1,16} (pkg/volume)
#   rekey      BenchmarkRekey/{batch,alone} (pkg/volume): the Vault
#              requests of rekey --all, batched and one volume at a time
#   format     BenchmarkFormat1GiB/{local,vault} (integration/cli): the
#              CLI against cryptsetup luksFormat, interleaved, with 64
#              other LUKS2 loop devices present
# The load average is printed with the figures: wall times on a shared
# machine measure the load as much as the code; the CPU figures less so.
set -euo pipefail
cd "$(dirname "$0")/.."
export ATREST_VAULTSERVER=${ATREST_VAULTSERVER:-$PWD/bin/vaultserver}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

run() { # package bench-regexp [env...]
	local pkg=$1 re=$2
	shift 2
	env "$@" go test -run '^$' -bench "$re" -benchtime "${BENCH_TIME:-5x}" -count 1 -timeout 60m "$pkg" | tee -a "$out" | { grep -E '^Benchmark' || true; }
}
# metric NAME UNIT: the value of UNIT on the result line of benchmark NAME.
metric() {
	awk -v b="^$1(-[0-9]+)?\$" -v u="$2" '$1 ~ b { for (i = 2; i < NF; i++) if ($(i+1) == u) v = $i } END { print v }' "$out"
}
verdict=0
check() { # label value op limit
	if [ -n "$2" ] && awk -v v="$2" -v l="$4" "BEGIN { exit !(v $3 l) }"; then
		printf '  ok    %-58s %s\n' "$1" "$2"
	else
		printf '  MISS  %-58s %s\n' "$1" "${2:-no figure}"
		verdict=1
	fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b }'; }

echo "== load $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores at start"
BENCH_TIME=2000x run ./pkg/luks2/ '^BenchmarkOpenPlatformKeyslot$'
BENCH_TIME=30x run ./pkg/luks2/ '^BenchmarkOpenKeyslots$/^(1|64)$'
run ./pkg/luks2/ '^BenchmarkAreaDecrypt$'
ossl=$(openssl speed -evp aes-256-xts -seconds 1 2>/dev/null | awk 'tolower($1) == "aes-256-xts" { v = $NF } END { sub(/k$/, "", v); print v / 1e6 }')
units=(64)
[ "${BENCH_1000:-}" = 1 ] && units+=(1000)
for n in "${units[@]}"; do
	BENCH_TIME=10x run ./pkg/volume/ "^BenchmarkUnlock\$/^$n\$" ATREST_BENCH_VOLUMES="$n"
done
BENCH_TIME=20x run ./integration/cli/ '^BenchmarkUnlockProcess$/^1$'
BENCH_TIME=5x run ./integration/cli/ '^BenchmarkUnlockProcess$/^64$'
BENCH_TIME=2x run ./pkg/volume/ '^BenchmarkRewrap$/vault-transit' ATREST_BENCH_REWRAP_VOLUMES=256
for n in 256 1000; do
	BENCH_TIME=2x run ./integration/cli/ '^BenchmarkRewrapAll$' ATREST_BENCH_REWRAP_VOLUMES="$n"
done
BENCH_TIME=2x run ./pkg/volume/ '^BenchmarkRekey$'

run ./pkg/volume/ '^BenchmarkStatusNames$'
BENCH_TIME=15x run ./integration/cli/ '^BenchmarkFormat1GiB$'

echo
echo "== load $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores at the end"
check "keyslot open CPU ms, in a batch of 64 (<= 0.8)" "$(metric BenchmarkOpenKeyslots/64 cpu-ms/keyslot)" "<=" 0.8
echo "        one open alone: $(metric BenchmarkOpenPlatformKeyslot cpu-ms/op) ms; a batch of one: $(metric BenchmarkOpenKeyslots/1 cpu-ms/keyslot) ms"
xts=$(metric BenchmarkAreaDecrypt/luks2 MB/s)
xx=$(metric BenchmarkAreaDecrypt/x-crypto-xts MB/s)
check "area decrypt MB/s (>= 2000 per core)" "$xts" ">=" 2000
echo "        x/crypto/xts $xx MB/s (atrest/x: $(ratio "$xts" "$xx")); openssl aes-256-xts ${ossl} GB/s"
for n in "${units[@]}"; do
	lim=30
	[ "$n" = 1000 ] && lim=500
	check "unlock work of $n volumes, local, wall ms (<= $lim)" "$(metric "BenchmarkUnlock/$n" local-ms/op)" "<=" "$lim"
	echo "        CPU per volume $(metric "BenchmarkUnlock/$n" local-cpu-ms/volume) ms; Vault $(metric "BenchmarkUnlock/$n" vault-ms/op) ms"
done
m=BenchmarkUnlockProcess/1
check "whole-process unlock, clevis / atrest via Vault (>= 20)" "$(metric $m ratio)" ">=" 20
echo "        median of the pairs' ratios; quartiles $(metric $m ratio-p25)-$(metric $m ratio-p75), load $(metric $m load1) at its end"
echo "        atrest $(metric $m atrest-ms/median) ms ($(metric $m atrest-cpu-ms/median) ms CPU), clevis $(metric $m clevis-ms/median) ms ($(metric $m clevis-cpu-ms/median) ms CPU) (medians)"
m=BenchmarkUnlockProcess/64
echo "        64 volumes, one atrest process against 64 clevis pipelines at once: ratio $(metric $m ratio) (quartiles $(metric $m ratio-p25)-$(metric $m ratio-p75), load $(metric $m load1))"
echo "        atrest $(metric $m atrest-ms/median) ms ($(metric $m atrest-cpu-ms/median) ms CPU), clevis $(metric $m clevis-ms/median) ms ($(metric $m clevis-cpu-ms/median) ms CPU)"
check "rewrap 256 in-process, ms per volume (<= 2)" "$(metric BenchmarkRewrap/vault-transit/256 ms/volume)" "<=" 2
echo "        Vault requests for all 256: $(metric BenchmarkRewrap/vault-transit/256 vault-requests/op); CPU per volume $(metric BenchmarkRewrap/vault-transit/256 cpu-ms/volume) ms"
for n in 256 1000; do
	check "rewrap --all of $n through the binary, ms per volume (<= 2)" "$(metric "BenchmarkRewrapAll/$n" ms/volume)" "<=" 2
	echo "        CPU per volume $(metric "BenchmarkRewrapAll/$n" cpu-ms/volume) ms"
done
s1=$(metric BenchmarkStatusNames/1 ns/op)
s16=$(metric BenchmarkStatusNames/16 ns/op)
check "status of 16 names / status of 1 (<= 2)" "$(ratio "$s16" "$s1")" "<=" 2
echo "        rekey --all of 64: Vault requests $(metric BenchmarkRekey/batch/64 vault-requests/op) batched, $(metric BenchmarkRekey/alone/64 vault-requests/op) one by one"
for k in local vault; do
	check "format 1 GiB ($k), atrest CLI / cryptsetup luksFormat, 64 other LUKS (<= 0.333)" "$(metric "BenchmarkFormat1GiB/$k" ratio)" "<=" 0.333
	echo "        atrest $(metric "BenchmarkFormat1GiB/$k" atrest-ms/median) ms, cryptsetup $(metric "BenchmarkFormat1GiB/$k" cryptsetup-ms/median) ms (medians)"
done
exit $verdict
