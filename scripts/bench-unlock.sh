#!/usr/bin/env bash
# Unlock work for N volumes without the kernel part, atrest against clevis
# and tang in one run (needs root, cryptsetup-bin, clevis, clevis-luks,
# tang and socat; `make deps` installs them):
#   atrest: BenchmarkUnlock/N in pkg/volume (ATREST_BENCH_VOLUMES=N): one
#     batched KMS unwrap (the local keystore and Vault Transit on loopback,
#     alternating in every iteration) and the N PBKDF2-SHA512/1000 platform
#     keyslots opened in parallel;
#   clevis: per volume `clevis luks pass` (a tang exchange with tang on
#     127.0.0.1) piped to `cryptsetup open --test-passphrase`, the keyslot
#     clevis bound (PBKDF2, 1000 iterations) — one volume after another, as
#     clevis-luks-askpass does, and N at a time as parallel
#     systemd-cryptsetup units would.
# Figures are medians over BENCH_ROUNDS rounds (default 5) of all N
# volumes (BENCH_VOLUMES, default 32).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${BENCH_VOLUMES:-32}
rounds=${BENCH_ROUNDS:-5}
for c in clevis cryptsetup socat /usr/libexec/tangd; do
	command -v "$c" >/dev/null || { echo "bench-unlock: $c missing; run: sudo make deps" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# tang on loopback: tangd serves one HTTP exchange on stdin/stdout.
mkdir "$work/tang"
/usr/libexec/tangd-keygen "$work/tang"
port=$((20000 + RANDOM % 20000))
socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" EXEC:"/usr/libexec/tangd $work/tang" 2>/dev/null &
pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/adv" >/dev/null 2>&1 && break; sleep 0.1; done

head -c 32 /dev/urandom | base64 > "$work/pass"
echo "setting up $n clevis volumes bound to tang on 127.0.0.1:$port ..."
for i in $(seq "$n"); do
	img="$work/v$i.img"
	truncate -s 20M "$img"
	cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$work/pass" "$img"
	clevis luks bind -y -d "$img" -k "$work/pass" tang "{\"url\":\"http://127.0.0.1:$port\"}" 2>/dev/null
done
slot=$(clevis luks list -d "$work/v1.img" | cut -d: -f1)

unlock_one() { # img: clevis recovers the passphrase, cryptsetup checks it
	clevis luks pass -d "$1" -s "$slot" | cryptsetup open --test-passphrase --key-slot "$slot" --key-file - "$1"
}
export -f unlock_one
export slot

now_ms() { date +%s%3N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
seq_ms=()
par_ms=()
for _ in $(seq "$rounds"); do
	t0=$(now_ms)
	for i in $(seq "$n"); do unlock_one "$work/v$i.img"; done
	seq_ms+=($(($(now_ms) - t0)))
	t0=$(now_ms)
	for i in $(seq "$n"); do echo "$work/v$i.img"; done | xargs -P "$n" -I{} bash -c 'unlock_one {}'
	par_ms+=($(($(now_ms) - t0)))
done
cs=$(printf '%s\n' "${seq_ms[@]}" | median)
cp=$(printf '%s\n' "${par_ms[@]}" | median)

out=$(ATREST_BENCH_VOLUMES=$n go test -run '^$' -bench "^BenchmarkUnlock\$/^$n\$" -benchtime 20x -count "$rounds" ./pkg/volume/)
echo "$out" | grep -E '^(Benchmark|cpu)'
# The median of a metric (local-ms/op, vault-ms/op) over the rounds.
metric() { echo "$out" | awk -v b="^BenchmarkUnlock/$n(-[0-9]+)?\$" -v u="$1" '$1 ~ b { for (i = 2; i < NF; i++) if ($(i+1) == u) print $i }' | median; }
al=$(metric local-ms/op)
av=$(metric vault-ms/op)
if [ -z "$al" ] || [ -z "$av" ]; then
	echo "bench-unlock: BenchmarkUnlock/$n reported no figures" >&2
	exit 1
fi
echo
echo "unlock work for $n volumes (medians of $rounds rounds; load $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores):"
printf '  atrest, local keystore:               %8.1f ms\n' "$al"
printf '  atrest, Vault Transit (loopback):     %8.1f ms\n' "$av"
printf '  clevis+tang, one after another:       %8.1f ms\n' "$cs"
printf '  clevis+tang, %d at a time:            %8.1f ms\n' "$n" "$cp"
# atrest's figures are its in-process unlock work, clevis's whole
# processes: BenchmarkUnlockProcess/64 (integration/cli, in bench-all.sh)
# compares whole processes on both sides.
printf '  ratio clevis (parallel, whole processes) / atrest Vault (in-process work): %.1f\n' "$(awk -v c="$cp" -v a="$av" 'BEGIN { print c / a }')"
