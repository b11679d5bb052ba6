#!/usr/bin/env bash
# Runs every fuzz target of backend/oauthclient, one after another, each for
# $FUZZTIME (default 30s). Exits non-zero at the first failure; go test then
# writes the failing input to backend/oauthclient/testdata/fuzz/<target>/,
# where it becomes a seed that plain `go test` replays.
#
# Env: FUZZTIME (30s), GO (go).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

GO="${GO:-go}"
FUZZTIME="${FUZZTIME:-30s}"
pkg=./backend/oauthclient/

targets=$("$GO" test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
if [[ -z "$targets" ]]; then
	echo "fuzz.sh: no fuzz targets found in $pkg" >&2
	exit 1
fi

for target in $targets; do
	echo "== $target ($FUZZTIME)"
	"$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"
done
echo "fuzz.sh: all targets passed"
