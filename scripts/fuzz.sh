#!/usr/bin/env bash
# Bounded fuzzing of every Fuzz target in the module (what `make fuzz` and
# CI run). Each target gets a budget in executions, not in time: Go 1.26's
# fuzz coordinator can fail a target with a bare "context deadline exceeded"
# at the end of a -fuzztime duration although nothing was found (a race
# between the deadline and its workers, go.dev/issue/75804, fixed in Go
# 1.27; CI met it on FuzzParse). A count has no deadline to race. The counts
# below are about 30 s of fuzzing each on a 2-core machine; a target not
# listed gets DEFAULT. FUZZSCALE multiplies every budget (FUZZSCALE=10 for a
# longer search). Minimising a new interesting input also gets a count
# (100 executions), not the 5 s it had: on a machine with an empty fuzz
# cache (CI's) a target finds 100-200 new inputs in its first seconds, and
# 5 s of minimising each stalled FuzzRead at under 1,000 executions a
# second (600,000 would have taken a quarter of an hour; with the count
# it takes 40 s). A real finding still fails: go test writes the input to
# testdata/fuzz/ and exits non-zero.
#   usage: scripts/fuzz.sh [PACKAGE...]   (default: every package)
set -euo pipefail
cd "$(dirname "$0")/.."
go=${GO:-go}
scale=${FUZZSCALE:-1}
DEFAULT=300000
# budget TARGET: executions for one target (package path/Fuzz name).
budget() {
  case $1 in
    */pkg/luks2/FuzzRead) echo 600000 ;;
    */pkg/blockdev/signature/FuzzProbe) echo 1200000 ;;
    */pkg/kms/kmip/FuzzParse) echo 1200000 ;;
    */pkg/kms/kmip/ttlv/FuzzDecode) echo 3000000 ;;
    *) echo $DEFAULT ;;
  esac
}
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || mapfile -t pkgs < <($go list ./...)
for pkg in "${pkgs[@]}"; do
  for f in $($go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    n=$(( $(budget "$($go list "$pkg")/$f") * scale ))
    echo "fuzz $pkg $f (${n} executions)"
    $go test -run '^$' -fuzz "^$f\$" -fuzztime "${n}x" -fuzzminimizetime 100x -timeout 30m "$pkg"
  done
done
