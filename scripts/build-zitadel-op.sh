#!/usr/bin/env bash
# Builds (or reuses) scripts/zitadel-op: the example OpenID Provider of
# github.com/zitadel/oidc/v3, the e2e tests' second real authorization server
# (tests/harness/zitadel.go runs this script on demand). It is built from the
# Go module proxy in its own module, so zitadel never touches our go.mod.
#
#   cache: ${ZITADEL_CACHE_DIR:-$HOME/.cache/vault-plugin-secrets-oauth}/zitadel-op-<ver>/zitadel-op
#
# The binary is rebuilt when the sources (scripts/zitadel-op/*) or the Go
# version change: their hash is kept next to it. A build takes seconds with
# a warm module cache. The last line printed is the path of the binary.
set -euo pipefail

ZITADEL_OIDC_VERSION=v3.52.0

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$root/scripts/zitadel-op"
cache_dir="${ZITADEL_CACHE_DIR:-$HOME/.cache/vault-plugin-secrets-oauth}/zitadel-op-$ZITADEL_OIDC_VERSION"
bin="$cache_dir/zitadel-op"
stamp="$cache_dir/zitadel-op.sources"

die() { echo "build-zitadel-op: error: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "go not found in PATH"
grep -q "github.com/zitadel/oidc/v3 $ZITADEL_OIDC_VERSION" "$src/go.mod" ||
	die "$src/go.mod does not require github.com/zitadel/oidc/v3 $ZITADEL_OIDC_VERSION"

want=$( (cd "$src" && sha256sum -- * && go env GOVERSION) | sha256sum | cut -d' ' -f1)

fresh() { [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; }

mkdir -p "$cache_dir"
if fresh; then
	echo "$bin"
	exit 0
fi

# Concurrent test packages may all ask at once: one builds, the others wait.
exec 9>"$cache_dir/.lock"
flock 9
if ! fresh; then
	tmp="$cache_dir/.zitadel-op.tmp.$$"
	trap 'rm -f "$tmp"' EXIT
	echo "build-zitadel-op: building zitadel oidc $ZITADEL_OIDC_VERSION example OP..." >&2
	(cd "$src" && GOWORK=off go build -trimpath -o "$tmp" .) || die "go build in $src failed"
	mv -f "$tmp" "$bin"
	echo "$want" >"$stamp"
	trap - EXIT
fi
echo "$bin"
