#!/usr/bin/env bash
# Prints the Debian version of the package built from this checkout,
# mapped from `git describe` so that every later commit sorts higher
# (dpkg --compare-versions) and upgrades go forward:
#
#   v1.4.0                     1.4.0
#   v1.4.0-7-g0123abc          1.4.0+git7.g0123abc       (after the tag)
#   v1.5.0-rc1                 1.5.0~rc1                 (before 1.5.0)
#   v1.5.0-rc1-2-g0123abc      1.5.0~rc1+git2.g0123abc
#   no v* tag, commit N        0~gitN.g0123abc           (before any release)
#   a dirty tree               the above + "+dirty"      (after its commit)
#
# With two arguments (DESCRIBE COUNT) it maps those instead of asking git:
# DESCRIBE is `git describe --tags --long --dirty --match 'v[0-9]*'`
# output or an abbreviated commit (no tag; add -dirty for a dirty tree),
# COUNT the number of commits (`git rev-list --count HEAD`).
set -euo pipefail

if [ $# -eq 2 ]; then
  describe=$1 count=$2
else
  cd "$(dirname "$0")"
  describe=$(git describe --tags --long --dirty --match 'v[0-9]*' 2>/dev/null) ||
    describe=$(git describe --always --dirty --abbrev=7)
  count=$(git rev-list --count HEAD)
fi

dirty=
case $describe in *-dirty) dirty=+dirty describe=${describe%-dirty} ;; esac

if [[ $describe =~ ^v([0-9][0-9A-Za-z.]*)(-([A-Za-z][0-9A-Za-z.]*))?-([0-9]+)-g([0-9a-f]+)$ ]]; then
  version=${BASH_REMATCH[1]}
  [ -n "${BASH_REMATCH[3]}" ] && version+="~${BASH_REMATCH[3]}"
  [ "${BASH_REMATCH[4]}" != 0 ] && version+="+git${BASH_REMATCH[4]}.g${BASH_REMATCH[5]}"
elif [[ $describe =~ ^[0-9a-f]+$ ]]; then
  version="0~git$count.g$describe"
else
  echo "version.sh: cannot map \"$describe\" to a Debian version (tags are vMAJOR.MINOR.PATCH[-PRE])" >&2
  exit 1
fi
echo "$version$dirty"
