#!/usr/bin/env bash
# Self-test of the test upstream (tests/upstream/server.js), with curl.
#
# Starts the server on a free 127.0.0.1 port with a STATE_FILE in a temp dir,
# exercises every behaviour the Go tests rely on (see README.md), restarts it
# to check persistence, measures /test/mint throughput, and stops it.
# Exits non-zero on the first failure. Needs: bash, curl, node, openssl.
#
#   bash tests/upstream/selftest.sh            # from anywhere
#   MINTS=5000 bash tests/upstream/selftest.sh # mints for the throughput step
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MINTS="${MINTS:-5000}"
SECRET=selftest-secret
CB=http://127.0.0.1/callback
DEVICE_GRANT=urn:ietf:params:oauth:grant-type:device_code

for bin in curl node openssl; do
	command -v "$bin" >/dev/null 2>&1 || { echo "selftest: $bin not found" >&2; exit 2; }
done
[ -d "$here/node_modules/oidc-provider" ] || { echo "selftest: run npm install in $here first" >&2; exit 2; }

tmp=$(mktemp -d)
server_pid=
stop_server() {
	if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
		kill -TERM "$server_pid" 2>/dev/null || true
		for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$server_pid" 2>/dev/null || true
	fi
	[ -n "$server_pid" ] && wait "$server_pid" 2>/dev/null || true
	server_pid=
}
cleanup() {
	local rc=$?
	stop_server
	if [ "$rc" -ne 0 ]; then
		echo "--- server log ($tmp/server.log) ---" >&2
		tail -n 40 "$tmp/server.log" >&2 2>/dev/null || true
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
ok() { passed=$((passed + 1)); echo "  ok   $*"; }
die() { echo "  FAIL $*" >&2; [ -n "${BODY:-}" ] && echo "       last response: HTTP ${STATUS:-?} ${BODY}" >&2; exit 1; }
step() { echo "== $*"; }

# jget JSON PATH: value at a dotted path ("a.b.0", "revocations.last.kind"); objects as JSON, missing as "".
jget() {
	node -e '
		let v = JSON.parse(process.argv[1]);
		for (const k of process.argv[2].split(".").filter(Boolean)) {
			if (v == null) break;
			v = (k === "last" && Array.isArray(v)) ? v[v.length - 1] : v[k];
		}
		process.stdout.write(v == null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
	' "$1" "$2"
}
expect() { # expect DESCRIPTION ACTUAL WANTED
	[ "$2" = "$3" ] || die "$1: got '$2', want '$3'"
	ok "$1"
}

# req METHOD URL [curl args...]: sets STATUS, BODY and LOCATION (no redirects followed).
req() {
	local method=$1 url=$2
	shift 2
	local out
	out=$(curl -sS -X "$method" -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' "$@" "$url") || die "curl $method $url"
	STATUS=$out
	BODY=$(cat "$tmp/body")
	LOCATION=$(sed -n 's/^[Ll]ocation: *\(.*\)\r$/\1/p' "$tmp/headers" | tail -n 1)
	if [ -n "$LOCATION" ] && [[ $LOCATION == /* ]]; then LOCATION="$BASE$LOCATION"; fi
}
basic() { req POST "$BASE$1" -u "vault-basic:$SECRET" "${@:2}"; }
post_auth() { req POST "$BASE$1" -d client_id=vault-post -d "client_secret=$SECRET" "${@:2}"; }
jar() { echo "$tmp/jar-$1"; }

free_port() {
	node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

start_server() {
	: >"$tmp/server.log"
	PORT=$PORT CLIENT_SECRET=$SECRET STATE_FILE="$tmp/state.json" REDIRECT_URIS="http://127.0.0.1:8200/v1/oauth/callback" \
		node "$here/server.js" >"$tmp/server.log" 2>&1 </dev/null &
	server_pid=$!
	for _ in $(seq 1 100); do
		grep -q "^upstream listening on $BASE\$" "$tmp/server.log" && return 0
		kill -0 "$server_pid" 2>/dev/null || die "server exited during startup"
		sleep 0.1
	done
	die "server did not print 'upstream listening on $BASE' within 10s"
}

# refresh CLIENT_ARGS... : refresh with vault-basic; sets STATUS/BODY.
refresh_basic() { basic /token -d grant_type=refresh_token -d "refresh_token=$1" "${@:2}"; }

PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
echo "selftest: upstream on $BASE (tmp $tmp)"

step "start"
start_server
ok "server listening on $BASE"
req GET "$BASE/.well-known/openid-configuration"
expect "discovery issuer" "$(jget "$BODY" issuer)" "$BASE"
expect "discovery scopes" "$(jget "$BODY" scopes_supported)" '["openid","offline_access","api:read","api:write","api:admin"]'

step "mint + refresh (rotation, down-scoping)"
req POST "$BASE/test/mint" -H 'content-type: application/json' \
	-d '{"client_id":"vault-basic","scope":"offline_access api:read api:write","account_id":"alice"}'
expect "mint status" "$STATUS" 200
RT0=$(jget "$BODY" refresh_token)
G1=$(jget "$BODY" grant_id)
[ -n "$RT0" ] && [ -n "$G1" ] || die "mint returned no refresh_token/grant_id"
ok "minted grant $G1"
req GET "$BASE/test/token?value=$RT0"
expect "minted RT active" "$(jget "$BODY" active)/$(jget "$BODY" kind)/$(jget "$BODY" grant_id)" "true/RefreshToken/$G1"
refresh_basic "$RT0" -d scope=api:read
expect "refresh status" "$STATUS" 200
AT1=$(jget "$BODY" access_token)
RT1=$(jget "$BODY" refresh_token)
expect "refresh response scope is the requested subset" "$(jget "$BODY" scope)" "api:read"
expect "refresh response token_type" "$(jget "$BODY" token_type)" "Bearer"
[ -n "$RT1" ] && [ "$RT1" != "$RT0" ] || die "refresh did not rotate the refresh token"
ok "refresh token rotated"
req GET "$BASE/test/token?value=$RT0"
expect "old RT consumed" "$(jget "$BODY" found)/$(jget "$BODY" consumed)/$(jget "$BODY" active)" "true/true/false"
req GET "$BASE/test/token?value=$RT1"
expect "new RT active, keeps the grant's full scope" "$(jget "$BODY" active)/$(jget "$BODY" scope)" "true/offline_access api:read api:write"

step "introspection"
post_auth /token/introspection -d "token=$AT1"
expect "AT introspection by another confidential client" \
	"$(jget "$BODY" active)/$(jget "$BODY" scope)/$(jget "$BODY" client_id)/$(jget "$BODY" token_type)/$(jget "$BODY" sub)" \
	"true/api:read/vault-basic/Bearer/alice"
[ -n "$(jget "$BODY" exp)" ] || die "introspection has no exp"
ok "introspection has exp"
basic /token/introspection -d "token=$RT1" -d token_type_hint=refresh_token
expect "RT introspection" "$(jget "$BODY" active)/$(jget "$BODY" token_type)" "true/refresh_token"
req POST "$BASE/token/introspection" -d client_id=vault-public -d "token=$AT1"
expect "public client cannot introspect others' tokens" "$(jget "$BODY" active)" "false"

step "reuse detection"
refresh_basic "$RT0"
expect "replay of consumed RT" "$STATUS/$(jget "$BODY" error)" "400/invalid_grant"
refresh_basic "$RT1"
expect "grant's newest RT dead after replay" "$STATUS/$(jget "$BODY" error)" "400/invalid_grant"
req GET "$BASE/test/token?value=$RT1"
expect "newest RT gone from adapter" "$(jget "$BODY" found)" "false"
req GET "$BASE/test/grant?id=$G1"
expect "grant gone" "$(jget "$BODY" found)" "false"
post_auth /token/introspection -d "token=$AT1"
expect "grant's access token inactive" "$(jget "$BODY" active)" "false"
req GET "$BASE/test/stats"
expect "refreshes_by_grant (success, replay, use of the revoked newest RT)" "$(jget "$BODY" "refreshes_by_grant.$G1")" 3
expect "rotations_by_grant" "$(jget "$BODY" "rotations_by_grant.$G1")" 1
expect "token_requests.refresh_token" "$(jget "$BODY" token_requests.refresh_token)" 3
expect "token_errors.invalid_grant" "$(jget "$BODY" token_errors.invalid_grant)" 2

step "access token revocation cascades to the grant"
req POST "$BASE/test/mint" -d '{"client_id":"vault-post","scope":"offline_access api:read","account_id":"bob"}'
RT=$(jget "$BODY" refresh_token)
G2=$(jget "$BODY" grant_id)
post_auth /token -d grant_type=refresh_token -d "refresh_token=$RT"
expect "refresh with client_secret_post" "$STATUS" 200
AT2=$(jget "$BODY" access_token)
RT2=$(jget "$BODY" refresh_token)
post_auth /token/revocation -d "token=$AT2" -d token_type_hint=access_token
expect "revoke access token" "$STATUS" 200
post_auth /token/introspection -d "token=$AT2"
expect "revoked AT inactive" "$(jget "$BODY" active)" "false"
post_auth /token -d grant_type=refresh_token -d "refresh_token=$RT2"
expect "grant's RT no longer works" "$STATUS/$(jget "$BODY" error)" "400/invalid_grant"
req GET "$BASE/test/token?value=$RT2"
expect "grant's RT gone" "$(jget "$BODY" found)" "false"
req GET "$BASE/test/stats"
expect "revocation recorded" "$(jget "$BODY" revocations.last.kind)/$(jget "$BODY" revocations.last.grant_id)/$(jget "$BODY" revocations.last.token_type_hint)/$(jget "$BODY" revocations.last.revoked)" \
	"AccessToken/$G2/access_token/true"

step "refresh token revocation, unknown token revocation"
req POST "$BASE/test/mint" -d '{"client_id":"vault-basic","scope":"offline_access api:write","account_id":"carol"}'
RT=$(jget "$BODY" refresh_token)
G3=$(jget "$BODY" grant_id)
post_auth /token/revocation -d "token=$RT"
expect "another client may not revoke it" "$STATUS/$(jget "$BODY" error)" "400/invalid_request"
basic /token/revocation -d "token=$RT" -d token_type_hint=refresh_token
expect "revoke refresh token" "$STATUS" 200
refresh_basic "$RT"
expect "revoked RT rejected" "$STATUS/$(jget "$BODY" error)" "400/invalid_grant"
basic /token/revocation -d token=no-such-token
expect "revoke unknown token" "$STATUS" 200
req GET "$BASE/test/stats"
expect "refused revocation recorded" "$(jget "$BODY" revocations.1.kind)/$(jget "$BODY" revocations.1.status)/$(jget "$BODY" revocations.1.revoked)" "RefreshToken/400/false"
expect "RT revocation recorded" "$(jget "$BODY" revocations.2.kind)/$(jget "$BODY" revocations.2.grant_id)/$(jget "$BODY" revocations.2.revoked)" "RefreshToken/$G3/true"
expect "unknown revocation recorded" "$(jget "$BODY" revocations.last.kind)/$(jget "$BODY" revocations.last.grant_id)/$(jget "$BODY" revocations.last.revoked)" "unknown//false"

step "client_credentials"
basic /token -d grant_type=client_credentials -d "scope=api:read api:admin"
expect "client_credentials" "$STATUS/$(jget "$BODY" scope)/$(jget "$BODY" refresh_token)" "200/api:read api:admin/"
CC=$(jget "$BODY" access_token)
post_auth /token/introspection -d "token=$CC"
expect "CC token introspection" "$(jget "$BODY" active)/$(jget "$BODY" scope)/$(jget "$BODY" client_id)/$(jget "$BODY" token_type)" \
	"true/api:read api:admin/vault-basic/Bearer"
req GET "$BASE/test/token?value=$CC"
expect "CC token in adapter" "$(jget "$BODY" kind)/$(jget "$BODY" active)" "ClientCredentials/true"
basic /token/revocation -d "token=$CC"
expect "revoke CC token" "$STATUS" 200
post_auth /token/introspection -d "token=$CC"
expect "revoked CC token inactive" "$(jget "$BODY" active)" "false"
req GET "$BASE/test/stats"
expect "CC revocation recorded" "$(jget "$BODY" revocations.last.kind)" "ClientCredentials"
req POST "$BASE/token" -d grant_type=client_credentials -d client_id=vault-public
[ "$STATUS" -ge 400 ] || die "vault-public may not use client_credentials"
ok "vault-public cannot use client_credentials ($(jget "$BODY" error))"

# auth_code_flow JARNAME QUERY LOGIN: GET /auth?QUERY, POST the login, follow
# redirects until the redirect_uri; sets CODE and CALLBACK.
auth_code_flow() {
	local j
	j=$(jar "$1")
	req GET "$BASE/auth?$2" -b "$j" -c "$j"
	expect "GET /auth redirects" "$STATUS" 303
	[[ $LOCATION == "$BASE/interaction/"* ]] || die "expected redirect to /interaction/, got $LOCATION"
	local uid=${LOCATION#"$BASE/interaction/"}
	req GET "$LOCATION" -b "$j" -c "$j"
	[ "$STATUS" = 200 ] && grep -q "<form method=\"post\" action=\"/interaction/$uid/login\">" <<<"$BODY" ||
		die "interaction page has no login form"
	ok "interaction page has the login form"
	req POST "$BASE/interaction/$uid/login" -b "$j" -c "$j" -d "login=$3"
	expect "POST login" "$STATUS" 303
	local n=0
	while [[ $LOCATION != "$CB"* ]]; do
		n=$((n + 1))
		[ "$n" -le 5 ] && [ -n "$LOCATION" ] || die "no redirect to $CB (status $STATUS)"
		req GET "$LOCATION" -b "$j" -c "$j"
	done
	CALLBACK=$LOCATION
	CODE=$(sed -n 's/.*[?&]code=\([^&]*\).*/\1/p' <<<"$CALLBACK")
	[ -n "$CODE" ] || die "callback has no code: $CALLBACK"
	[[ $CALLBACK == *"state=st-$1"* ]] || die "callback lost the state: $CALLBACK"
	ok "redirected to $CB with code and state"
}

step "authorization code flow, public client, PKCE, openid offline_access prompt=consent"
VERIFIER=$(openssl rand -base64 48 | tr '+/' '-_' | tr -d '=\n')
CHALLENGE=$(printf '%s' "$VERIFIER" | openssl dgst -sha256 -binary | openssl base64 -A | tr '+/' '-_' | tr -d '=')
auth_code_flow pub "client_id=vault-public&response_type=code&redirect_uri=$CB&scope=openid%20offline_access%20api:read&prompt=consent&state=st-pub&code_challenge=$CHALLENGE&code_challenge_method=S256" alice
req POST "$BASE/token" -d grant_type=authorization_code -d client_id=vault-public -d "code=$CODE" -d "redirect_uri=$CB" -d code_verifier=wrong-verifier-wrong-verifier-wrong-verifier-00
expect "wrong code_verifier" "$STATUS/$(jget "$BODY" error)" "400/invalid_grant"
auth_code_flow pub "client_id=vault-public&response_type=code&redirect_uri=$CB&scope=openid%20offline_access%20api:read&prompt=consent&state=st-pub&code_challenge=$CHALLENGE&code_challenge_method=S256" alice
req POST "$BASE/token" -d grant_type=authorization_code -d client_id=vault-public -d "code=$CODE" -d "redirect_uri=$CB" -d "code_verifier=$VERIFIER"
expect "code exchange" "$STATUS/$(jget "$BODY" scope)" "200/openid offline_access api:read"
[ -n "$(jget "$BODY" refresh_token)" ] && [ -n "$(jget "$BODY" id_token)" ] || die "no refresh_token / id_token"
ok "refresh_token and id_token issued"
req POST "$BASE/token" -d grant_type=refresh_token -d client_id=vault-public -d "refresh_token=$(jget "$BODY" refresh_token)"
expect "public client refresh" "$STATUS/$(jget "$BODY" scope)" "200/openid offline_access api:read"
req POST "$BASE/token" -d grant_type=authorization_code -d client_id=vault-public -d "code=$CODE" -d "redirect_uri=$CB" -d "code_verifier=$VERIFIER"
expect "code reuse rejected" "$STATUS/$(jget "$BODY" error)" "400/invalid_grant"
req GET "$BASE/auth?client_id=vault-public&response_type=code&redirect_uri=$CB&scope=api:read&state=x"
expect "public client without PKCE rejected (error redirect)" \
	"$STATUS/$(sed -n 's/.*[?&]error=\([^&]*\).*/\1/p' <<<"$LOCATION")" "303/invalid_request"

step "authorization code flow, confidential client, plain OAuth (no openid, no prompt)"
auth_code_flow plain "client_id=vault-basic&response_type=code&redirect_uri=$CB&scope=offline_access%20api:read%20api:write&state=st-plain" dave
basic /token -d grant_type=authorization_code -d "code=$CODE" -d "redirect_uri=$CB"
expect "code exchange" "$STATUS/$(jget "$BODY" scope)/$(jget "$BODY" id_token)" "200/offline_access api:read api:write/"
RT=$(jget "$BODY" refresh_token)
refresh_basic "$RT" -d "scope=api:write"
expect "refresh down-scoped" "$STATUS/$(jget "$BODY" scope)" "200/api:write"
refresh_basic "$(jget "$BODY" refresh_token)" -d "scope=api:admin"
expect "refresh up-scoping rejected" "$STATUS/$(jget "$BODY" error)" "400/invalid_scope"

step "device flow (vault-basic, user alice)"
basic /device/auth -d "scope=offline_access api:read"
expect "device authorization" "$STATUS/$(jget "$BODY" verification_uri)/$(jget "$BODY" interval)" "200/$BASE/device/1"
DC=$(jget "$BODY" device_code)
UC=$(jget "$BODY" user_code)
basic /token -d grant_type=$DEVICE_GRANT -d "device_code=$DC"
expect "poll before approval" "$STATUS/$(jget "$BODY" error)" "400/authorization_pending"
J=$(jar device)
req GET "$BASE/device" -b "$J" -c "$J"
XSRF=$(sed -n 's/.*name="xsrf" value="\([^"]*\)".*/\1/p' <<<"$BODY" | head -n 1)
[ "$STATUS" = 200 ] && [ -n "$XSRF" ] || die "GET /device: no xsrf field"
ok "GET /device form with xsrf"
req POST "$BASE/device" -b "$J" -c "$J" -d "xsrf=$XSRF" -d "user_code=$UC"
[ "$STATUS" = 200 ] && grep -q 'name="confirm" value="yes"' <<<"$BODY" || die "POST /device without confirm: no confirm form"
ok "POST /device (no confirm) renders the confirm form"
XSRF=$(sed -n 's/.*name="xsrf" value="\([^"]*\)".*/\1/p' <<<"$BODY" | head -n 1)
req POST "$BASE/device" -b "$J" -c "$J" -d "xsrf=$XSRF" -d "user_code=$UC" -d confirm=yes
expect "POST /device confirm=yes" "$STATUS" 303
[[ $LOCATION == "$BASE/interaction/"* ]] || die "expected redirect to /interaction/, got $LOCATION"
UID_=${LOCATION#"$BASE/interaction/"}
req POST "$BASE/interaction/$UID_/login" -b "$J" -c "$J" -d login=alice
expect "POST login" "$STATUS" 303
req GET "$LOCATION" -b "$J" -c "$J"
[ "$STATUS" = 200 ] && grep -q 'id="device-success"' <<<"$BODY" || die "device resume did not render the success page"
ok "device approved (success page)"
basic /token -d grant_type=$DEVICE_GRANT -d "device_code=$DC"
expect "device token" "$STATUS/$(jget "$BODY" scope)" "200/offline_access api:read"
DRT=$(jget "$BODY" refresh_token)
post_auth /token/introspection -d "token=$(jget "$BODY" access_token)"
expect "device token subject" "$(jget "$BODY" sub)" "alice"
refresh_basic "$DRT"
expect "device grant refresh" "$STATUS" 200
basic /token -d grant_type=$DEVICE_GRANT -d "device_code=$DC"
expect "device code reuse rejected" "$STATUS/$(jget "$BODY" error)" "400/invalid_grant"

step "device flow (vault-public, verification_uri_complete)"
req POST "$BASE/device/auth" -d client_id=vault-public -d "scope=offline_access api:read"
DC=$(jget "$BODY" device_code)
UC=$(jget "$BODY" user_code)
J=$(jar device2)
req GET "$BASE/device?user_code=$UC" -b "$J" -c "$J"
XSRF=$(sed -n 's/.*name="xsrf" value="\([^"]*\)".*/\1/p' <<<"$BODY" | head -n 1)
[ -n "$XSRF" ] || die "GET /device?user_code: no xsrf"
req POST "$BASE/device" -b "$J" -c "$J" -d "xsrf=$XSRF" -d "user_code=$UC" -d confirm=yes
UID_=${LOCATION#"$BASE/interaction/"}
req POST "$BASE/interaction/$UID_/login" -b "$J" -c "$J" -d login=alice
req GET "$LOCATION" -b "$J" -c "$J"
grep -q 'id="device-success"' <<<"$BODY" || die "public device flow not approved"
req POST "$BASE/token" -d grant_type=$DEVICE_GRANT -d client_id=vault-public -d "device_code=$DC"
expect "public device token" "$STATUS/$(jget "$BODY" scope)" "200/offline_access api:read"

step "stats"
req GET "$BASE/test/stats"
expect "token_requests.authorization_code" "$(jget "$BODY" token_requests.authorization_code)" 4
expect "token_requests device_code" "$(jget "$BODY" "token_requests.$DEVICE_GRANT")" 4
expect "token_requests.client_credentials" "$(jget "$BODY" token_requests.client_credentials)" 2
[ "$(jget "$BODY" introspections)" -ge 8 ] || die "introspections not counted"
ok "introspections counted ($(jget "$BODY" introspections))"
req POST "$BASE/test/reset-stats"
expect "reset-stats" "$STATUS" 200
req GET "$BASE/test/stats"
expect "stats reset" "$(jget "$BODY" token_requests.refresh_token)/$(jget "$BODY" revocations)/$(jget "$BODY" introspections)" "0/[]/0"

step "STATE_FILE: stop and start again on the same port"
req POST "$BASE/test/mint" -d '{"client_id":"vault-basic","scope":"offline_access api:read","account_id":"erin"}'
P0=$(jget "$BODY" refresh_token)
PG=$(jget "$BODY" grant_id)
refresh_basic "$P0"
P1=$(jget "$BODY" refresh_token)
PAT=$(jget "$BODY" access_token)
kill -TERM "$server_pid"
rc=0
wait "$server_pid" || rc=$?
server_pid=
expect "SIGTERM exit status" "$rc" 0
grep -q "saved .* entries to $tmp/state.json" "$tmp/server.log" || die "no 'saved' line in the log"
[ -s "$tmp/state.json" ] || die "state file not written"
ok "state file written ($(wc -c <"$tmp/state.json") bytes)"
start_server
grep -q "loaded .* entries from $tmp/state.json" "$tmp/server.log" || die "no 'loaded' line in the log"
ok "restarted, state loaded"
post_auth /token/introspection -d "token=$PAT"
expect "access token survives restart" "$(jget "$BODY" active)/$(jget "$BODY" sub)" "true/erin"
refresh_basic "$P1"
expect "rotated RT survives restart" "$STATUS" 200
P2=$(jget "$BODY" refresh_token)
refresh_basic "$P0"
expect "reuse detection survives restart" "$STATUS/$(jget "$BODY" error)" "400/invalid_grant"
refresh_basic "$P2"
expect "grant dead after replay" "$STATUS/$(jget "$BODY" error)" "400/invalid_grant"
req GET "$BASE/test/grant?id=$PG"
expect "grant gone" "$(jget "$BODY" found)" "false"

step "/test/mint throughput ($MINTS sequential mints over one keep-alive connection)"
node --input-type=module - "$BASE" "$MINTS" <<'EOF'
import http from 'node:http';
const [base, nStr] = process.argv.slice(2);
const n = Number(nStr);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const body = JSON.stringify({ client_id: 'vault-basic', scope: 'offline_access api:read api:write', account_id: 'alice' });
const mint = () => new Promise((resolve, reject) => {
  const req = http.request(`${base}/test/mint`, {
    method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
  }, (res) => {
    let d = '';
    res.setEncoding('utf8');
    res.on('data', (c) => { d += c; });
    res.on('end', () => (res.statusCode === 200 && JSON.parse(d).refresh_token ? resolve() : reject(new Error(`HTTP ${res.statusCode} ${d}`))));
  });
  req.on('error', reject);
  req.end(body);
});
const t0 = process.hrtime.bigint();
for (let i = 0; i < n; i += 1) await mint();
const s = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(`  ok   ${n} sequential mints in ${s.toFixed(2)}s = ${Math.round(n / s)} mints/s`);
agent.destroy();
EOF
passed=$((passed + 1))

step "stop"
kill -TERM "$server_pid"
rc=0
wait "$server_pid" || rc=$?
server_pid=
expect "SIGTERM exit status" "$rc" 0

echo "selftest: PASS ($passed checks)"
