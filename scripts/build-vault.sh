#!/usr/bin/env bash
# Builds (or reuses) the real `vault` server binary that make dev / make test /
# the e2e harness run. It is built from the Go module proxy via the separate
# tools module in scripts/vault-tools, so Vault's huge dependency tree never
# touches the plugin's go.mod.
#
#   cache:   ${VAULT_CACHE_DIR:-$HOME/.cache/vault-plugin-secrets-oauth}/vault-<ver>/vault
#   in repo: .tools/vault-<ver>/vault  (symlink to the cache; ignored by git)
#
# The last line printed is always the path of the binary to use.
# A cold build takes 11-16 minutes on 2 cores (about 1,300 s of CPU); later
# runs reuse the cache.
set -euo pipefail

VAULT_VERSION=1.21.0

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_dir="${VAULT_CACHE_DIR:-$HOME/.cache/vault-plugin-secrets-oauth}/vault-$VAULT_VERSION"
cache_bin="$cache_dir/vault"
repo_dir="$root/.tools/vault-$VAULT_VERSION"
repo_bin="$repo_dir/vault"

log() { echo "build-vault: $*" >&2; }
die() { echo "build-vault: error: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "go not found in PATH"

# works BIN: true when BIN is an executable Vault of the wanted version.
works() {
	[ -x "$1" ] || return 1
	local out
	out=$("$1" version 2>/dev/null) || return 1
	case "$out" in *"Vault v$VAULT_VERSION"*) return 0 ;; *) return 1 ;; esac
}

expose() {
	mkdir -p "$repo_dir"
	# Symlink into the cache; fall back to a copy if symlinks are not possible.
	if [ "$(readlink "$repo_bin" 2>/dev/null || true)" != "$cache_bin" ]; then
		rm -f "$repo_bin"
		ln -s "$cache_bin" "$repo_bin" 2>/dev/null || cp "$cache_bin" "$repo_bin"
	fi
	echo "$repo_bin"
}

# Another `go build` of Vault (e.g. started by hand or by a concurrent script
# outside our lock) writes the same cache: wait for it instead of racing it.
wait_foreign_builds() {
	local waited=0 pids
	while pids=$(pgrep -f '^([^ ]*/)?go build .*hashicorp/vault' 2>/dev/null) && [ -n "$pids" ]; do
		if [ "$waited" -eq 0 ]; then
			log "another vault build is running (pid $(echo $pids)); waiting for it..."
		fi
		sleep 5
		waited=$((waited + 5))
		[ "$waited" -lt 3600 ] || die "gave up waiting for the other vault build after 1h"
	done
}

mkdir -p "$cache_dir"

if works "$cache_bin"; then
	echo "vault $VAULT_VERSION: cached at $cache_bin"
	expose
	exit 0
fi

# Serialise our own builds on a lock next to the cache.
exec 9>"$cache_dir/.lock"
if ! flock -n 9; then
	log "another build-vault.sh holds $cache_dir/.lock; waiting..."
	flock 9
fi

wait_foreign_builds

if works "$cache_bin"; then
	echo "vault $VAULT_VERSION: cached at $cache_bin"
	expose
	exit 0
fi

tmp="$cache_dir/.vault.tmp.$$"
# Leftovers of builds that were killed (we hold the lock, so none is live).
rm -f "$cache_dir"/.vault.tmp.* "$cache_bin"
trap 'rm -f "$tmp"' EXIT
trap 'rm -f "$tmp"; exit 130' INT TERM
log "building vault $VAULT_VERSION from the Go module proxy (11-16 min on 2 cores)..."
start=$(date +%s)
(
	cd "$root/scripts/vault-tools"
	go build -trimpath -ldflags "-s -w" -o "$tmp" github.com/hashicorp/vault
) || die "go build of vault $VAULT_VERSION failed"
works "$tmp" || die "built binary $tmp does not report Vault v$VAULT_VERSION"
mv -f "$tmp" "$cache_bin"
trap - EXIT INT TERM
log "built vault $VAULT_VERSION in $(( $(date +%s) - start ))s"
expose
