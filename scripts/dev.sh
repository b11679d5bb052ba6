#!/usr/bin/env bash
# make dev: a local playground.
#
# Builds the plugin, builds/finds Vault 1.21.0, installs the upstream's npm
# dependencies, then runs
#   - the upstream OAuth server (tests/upstream/server.js) on 127.0.0.1:$UPSTREAM_PORT
#   - `vault server -dev` on 127.0.0.1:$VAULT_PORT with the plugin mounted at oauth/
# and configures a provider, a grant and a role. Ctrl-C stops both.
#
# Env: VAULT_PORT (8200), UPSTREAM_PORT (9011).  Logs and state live in .dev/.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

VAULT_PORT="${VAULT_PORT:-8200}"
UPSTREAM_PORT="${UPSTREAM_PORT:-9011}"
PLUGIN=vault-plugin-secrets-oauth
DEV_DIR="$root/.dev"
CLIENT_SECRET=dev-client-secret

say() { echo "dev: $*" >&2; }
die() { echo "dev: error: $*" >&2; exit 1; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for p in "$VAULT_PORT" "$UPSTREAM_PORT"; do
	port_busy "$p" && die "port 127.0.0.1:$p is already in use (set VAULT_PORT / UPSTREAM_PORT)"
done
command -v curl >/dev/null 2>&1 || die "curl not found"
command -v node >/dev/null 2>&1 || die "node not found"

say "building plugin"
make -s build >&2 || die "plugin build failed"
vault_bin=$(bash scripts/build-vault.sh | tail -n 1)
[ -x "$vault_bin" ] || die "no vault binary"
bash scripts/upstream-install.sh
[ -f tests/upstream/server.js ] || die "tests/upstream/server.js does not exist yet"

mkdir -p "$DEV_DIR"
plugin_dir="$DEV_DIR/plugins"
rm -rf "$plugin_dir"
mkdir -p "$plugin_dir"
cp "bin/$PLUGIN" "$plugin_dir/$PLUGIN"
sha=$(sha256sum "$plugin_dir/$PLUGIN" | cut -d' ' -f1)

pids=()
cleanup() {
	local rc=$? pid i
	trap - EXIT INT TERM
	if [ "${#pids[@]}" -gt 0 ]; then
		say "stopping..."
		# Vault first (it stops the plugin), then the upstream.
		for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
			pid=${pids[i]}
			kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
			for _ in $(seq 1 50); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.2
			done
			kill -KILL -- "-$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
		done
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_http NAME URL PID LOG: poll URL until it answers, or fail if PID died.
wait_http() {
	local name=$1 url=$2 pid=$3 logf=$4 i
	for i in $(seq 1 300); do
		if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 40 "$logf" >&2 || true
			die "$name exited during startup (log: $logf)"
		fi
		sleep 0.1
	done
	tail -n 40 "$logf" >&2 || true
	die "$name did not answer $url within 30s (log: $logf)"
}

upstream_url="http://127.0.0.1:$UPSTREAM_PORT"
vault_addr="http://127.0.0.1:$VAULT_PORT"

say "starting upstream on $upstream_url (log: .dev/upstream.log)"
# setsid: own process group, so cleanup can stop it (and anything it spawns) as a unit.
PORT="$UPSTREAM_PORT" HOST=127.0.0.1 ISSUER="$upstream_url" \
	CLIENT_SECRET="$CLIENT_SECRET" \
	REDIRECT_URIS="$vault_addr/v1/oauth/callback" \
	STATE_FILE="$DEV_DIR/upstream-state.json" \
	setsid node tests/upstream/server.js >"$DEV_DIR/upstream.log" 2>&1 </dev/null &
pids+=($!)
wait_http upstream "$upstream_url/.well-known/openid-configuration" "${pids[-1]}" "$DEV_DIR/upstream.log"

say "starting vault on $vault_addr (log: .dev/vault.log)"
setsid "$vault_bin" server -dev -dev-root-token-id=root -dev-no-store-token \
	-dev-listen-address="127.0.0.1:$VAULT_PORT" -dev-plugin-dir="$plugin_dir" \
	>"$DEV_DIR/vault.log" 2>&1 </dev/null &
pids+=($!)
wait_http vault "$vault_addr/v1/sys/health" "${pids[-1]}" "$DEV_DIR/vault.log"

export VAULT_ADDR="$vault_addr" VAULT_TOKEN=root
unset VAULT_NAMESPACE VAULT_CACERT VAULT_CAPATH VAULT_CLIENT_CERT VAULT_CLIENT_KEY
v() { "$vault_bin" "$@" >/dev/null || die "vault $1 $2 failed"; }

say "registering and mounting the plugin at oauth/"
v plugin register -sha256="$sha" secret "$PLUGIN"
v secrets enable -path=oauth "$PLUGIN"

say "configuring provider local, grant dev, role reader"
v write oauth/providers/local issuer="$upstream_url" client_id=vault-basic client_secret="$CLIENT_SECRET"
mint=$(curl -fsS -X POST -H 'content-type: application/json' \
	-d '{"client_id":"vault-basic","scope":"offline_access api:read api:write","account_id":"dev"}' \
	"$upstream_url/test/mint") || die "POST $upstream_url/test/mint failed"
RT=$(printf '%s' "$mint" | node -e '
let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
  const j = JSON.parse(s);
  if (!j.refresh_token) { console.error("no refresh_token in /test/mint answer"); process.exit(1); }
  process.stdout.write(j.refresh_token);
});') || die "could not read refresh_token from /test/mint"
# The refresh token goes in on stdin (key=-), so it never shows up in ps.
printf '%s' "$RT" | v write oauth/grants/dev provider=local refresh_token=- scopes="api:read,api:write"
unset RT mint
v write oauth/roles/reader grant=dev scopes=api:read ttl=5m

cat <<MSG

Vault $vault_addr (root token: root) with oauth/ mounted; upstream $upstream_url.
Logs: .dev/vault.log, .dev/upstream.log.  In another shell:

  export PATH="$(dirname "$vault_bin"):\$PATH"
  export VAULT_ADDR=$vault_addr
  export VAULT_TOKEN=root
  vault read oauth/creds/reader

Ctrl-C here stops everything.
MSG

# Block until Ctrl-C or until one of the processes dies.
set +e
wait -n "${pids[@]}"
say "a process exited unexpectedly; see .dev/vault.log and .dev/upstream.log"
exit 1
