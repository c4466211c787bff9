#!/usr/bin/env bash
# Bounded fuzzing of every Fuzz target in the module (what `make fuzz` and
# CI run). Each target gets a budget in executions, not in time: Go 1.26's
# fuzz coordinator can fail a target with a bare "context deadline exceeded"
# at the end of a -fuzztime duration although nothing was found (a race
# between the deadline and its workers, go.dev/issue/75804, fixed in Go
# 1.27; CI met it on FuzzParse). A count has no deadline to race. The counts
# below are about 30 s of fuzzing each on a 2-core machine; a target not
# listed gets DEFAULT. FUZZSCALE multiplies every budget (FUZZSCALE=10 for a
# longer search). A real finding still fails: go test writes the input to
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
    $go test -run '^$' -fuzz "^$f\$" -fuzztime "${n}x" -fuzzminimizetime 5s -timeout 30m "$pkg"
  done
done
