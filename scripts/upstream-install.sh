#!/usr/bin/env bash
# Installs the upstream OAuth test server's npm dependencies (node-oidc-provider)
# when node_modules is missing or older than package-lock.json.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir="$root/tests/upstream"

die() { echo "upstream-install: error: $*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node not found in PATH (apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm not found in PATH (apt-get install npm)"
[ -f "$dir/package-lock.json" ] || die "$dir/package-lock.json is missing"

cd "$dir"
if [ ! -d node_modules ] || [ ! -f node_modules/.package-lock.json ] ||
	[ package-lock.json -nt node_modules/.package-lock.json ] ||
	[ package.json -nt node_modules/.package-lock.json ]; then
	echo "upstream-install: npm ci in tests/upstream" >&2
	npm ci --no-audit --no-fund --loglevel=error >&2 || die "npm ci failed in $dir"
fi
