#!/usr/bin/env bash
# Checks that the plugin has one default ("development") version string.
#
# An untagged build is stamped with a vX.Y.Z-dev version in three places that
# must agree: the compiled-in default of backend.Version (backend/), the
# Makefile's DEV_VERSION (used when `git describe` finds no tag), and the e2e
# harness's fallback (tests/harness/, used by a plain `go test`). This script
# collects every vX.Y.Z-dev literal in the code and scripts that stamp or
# default the version and fails, listing file:line, unless they are all the
# same. Run by `make lint`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

self=scripts/check-version-default.sh
pattern='v[0-9]+\.[0-9]+\.[0-9]+-dev\b'

# file:line:literal for every occurrence (generated reports such as
# BENCHMARKS.md and prose docs are not sources of the default).
hits=$(
	{
		grep -HnoE "$pattern" Makefile .ci/run 2>/dev/null || true
		grep -rHnoE --include='*.go' "$pattern" backend cmd tests/harness 2>/dev/null || true
		grep -rHnoE --include='*.sh' "$pattern" scripts 2>/dev/null | grep -v "^$self:" || true
	} | sort -t: -k1,1 -k2,2n
)

die() { echo "check-version-default: $*" >&2; exit 1; }

[ -n "$hits" ] || die "no vX.Y.Z-dev default version found at all"
printf '%s\n' "$hits" | grep -q '^backend/' ||
	die "backend/ has no vX.Y.Z-dev default for backend.Version; found only:"$'\n'"$hits"

versions=$(printf '%s\n' "$hits" | awk -F: '{ print $NF }' | sort -u)
if [ "$(printf '%s\n' "$versions" | wc -l)" -ne 1 ]; then
	want=$(printf '%s\n' "$hits" | awk -F: '$1 ~ /^backend\// { print $NF; exit }')
	{
		echo "check-version-default: the default version differs between files (backend.Version's default is $want):"
		printf '%s\n' "$hits" | sed 's/^/  /'
	} >&2
	exit 1
fi
echo "check-version-default: $versions in all $(printf '%s\n' "$hits" | wc -l) places"
