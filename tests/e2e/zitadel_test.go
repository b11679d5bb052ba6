package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// The example OpenID Provider of github.com/zitadel/oidc/v3 as a second
// real authorization server (scripts/zitadel-op). What it does that these
// tests rely on, from its source (example/server/storage/storage.go):
//
//   - access tokens live 5 minutes, refresh tokens 5 hours;
//   - every refresh rotates the refresh token and deletes both the old
//     refresh token and the access token issued with it (renewRefreshToken);
//   - revoking an access token deletes only that token, revoking a refresh
//     token deletes it and its latest access token (RevokeToken): it does
//     not cascade, so the provider is written with revocation_cascades=false;
//   - introspection answers active only for a token whose audience holds the
//     calling client (SetIntrospectionFromToken); a token exchanged for
//     audience "api" is therefore active for the "api" client alone;
//   - the admin test user (id1) may exchange tokens without an actor
//     (ValidateTokenExchangeRequest), and the example defaults a missing
//     requested_token_type to refresh_token: the engine asks for an access
//     token, so no refresh token is left alive upstream by an exchange.

const zitadelUserID = "id1" // example/server/storage/user.go: the admin test user

// startZitadel starts a Vault with a raw audit device beside the harness's
// HMAC'ing one, and the zitadel OP with Vault's callback registered; it
// configures provider "zitadel" by issuer discovery.
func startZitadel(t *testing.T) (*harness.Vault, *harness.ZitadelOP, string) {
	t.Helper()
	v := harness.StartVault(t)
	rawAudit := t.TempDir() + "/audit-raw.log"
	v.MustCLI(t, "audit", "enable", "-path=raw", "file", "file_path="+rawAudit, "log_raw=true")
	callback := v.Addr + "/v1/oauth/callback"
	z := harness.StartZitadelOP(t, harness.ZitadelOptions{RedirectURIs: []string{callback}})
	v.MustCLI(t, "write", "oauth/config", "redirect_uri="+callback, "tidy_interval=1s", "upstream_timeout=10s")
	if _, err := v.CLIWithStdin(t, z.ClientSecret, "write", "oauth/providers/zitadel", "issuer="+z.URL,
		"client_id="+z.ClientID, "client_secret=-", "revocation_cascades=false",
		"allowed_audiences="+z.APIClientID); err != nil {
		t.Fatal(err)
	}
	return v, z, rawAudit
}

// TestZitadelFullCycle: browser authorization, issue, rotation, renewal,
// lease revocation, token exchange and grant deletion against zitadel's
// example OP, through the real Vault.
func TestZitadelFullCycle(t *testing.T) {
	v, z, rawAudit := startZitadel(t)

	// Discovery found every endpoint the engine uses.
	p := readData(t, v, "oauth/providers/zitadel")
	for field, key := range map[string]string{
		"token_url":                "token_endpoint",
		"authorization_url":        "authorization_endpoint",
		"revocation_url":           "revocation_endpoint",
		"introspection_url":        "introspection_endpoint",
		"device_authorization_url": "device_authorization_endpoint",
	} {
		if p[field] != z.Endpoint(t, key) {
			t.Errorf("provider %s = %v, discovery says %s", field, p[field], z.Endpoint(t, key))
		}
	}

	// --- authorization code flow: Vault → browser at the OP → Vault's callback.
	out := v.MustCLI(t, "write", "-format=json", "oauth/grants/z/authorize", "provider=zitadel",
		"scopes=openid,offline_access,profile,email")
	var started struct {
		Data struct {
			AuthorizationURL string `json:"authorization_url"`
			State            string `json:"state"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &started); err != nil || started.Data.AuthorizationURL == "" || started.Data.State == "" {
		t.Fatalf("authorize: %v %s", err, out)
	}
	if !strings.HasPrefix(started.Data.AuthorizationURL, z.Endpoint(t, "authorization_endpoint")+"?") {
		t.Fatalf("authorization_url %s is not at the OP's authorization endpoint", started.Data.AuthorizationURL)
	}
	back := z.Authorize(t, started.Data.AuthorizationURL, v.Addr+"/v1/oauth/callback")
	if back.Query().Get("state") != started.Data.State || back.Query().Get("code") == "" {
		t.Fatalf("OP redirected to %s", back.Redacted())
	}
	status, body := get(t, back.String())
	if status != http.StatusOK || !strings.Contains(body, `"status":"active"`) {
		t.Fatalf("callback: HTTP %d %s", status, body)
	}
	g := grantData(t, v, "z")
	if g["status"] != "active" || g["subject"] != zitadelUserID || jsonInt(g["rotation_count"]) != 0 {
		t.Fatalf("grant after the callback = %v", g)
	}
	rts := z.RefreshTokens(t)
	if len(rts) != 1 || rts[0].Source != "authorization_code" || !rts[0].Live || rts[0].ClientID != z.ClientID ||
		rts[0].Subject != zitadelUserID || !slices.Contains(rts[0].Scopes, "offline_access") {
		t.Fatalf("OP refresh tokens after the code exchange = %+v", rts)
	}
	codeRT := rts[0].Token

	// --- issue: a refresh per creds read, rotated by the OP.
	v.MustCLI(t, "write", "oauth/roles/zr", "grant=z")
	first := cliCreds(t, v, "zr")
	at1, _ := first["access_token"].(string)
	if at1 == "" || first["revocation"] != "on_lease_end" || first["grant"] != "z" || !nonEmpty(first["expires_at"]) {
		t.Fatalf("creds = %v", first)
	}
	// The lease ends with the OP's 5-minute token, less refresh_skew (10s).
	if d := first["lease_duration"].(int); d < 240 || d > 290 {
		t.Fatalf("lease_duration = %ds, want the token's 5m less the 10s skew", d)
	}
	info := z.Introspect(t, at1)
	if info["active"] != true || info["sub"] != zitadelUserID || info["client_id"] != z.ClientID {
		t.Fatalf("issued token introspects as %v", info)
	}
	if code, ui := z.Userinfo(t, at1); code != http.StatusOK || ui["sub"] != zitadelUserID || ui["preferred_username"] != z.Username {
		t.Fatalf("userinfo with the issued token: HTTP %d %v", code, ui)
	}
	rt1 := chainHead(t, z, codeRT)
	if rt1.Token == codeRT || rt1.Source != "refresh_token" {
		t.Fatalf("the refresh did not rotate: %+v", rt1)
	}
	// The OP refuses the rotated-out refresh token (invalid_grant).
	if code, resp := z.TokenRequest(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {codeRT}}); code != http.StatusBadRequest || resp["error"] != "invalid_grant" {
		t.Fatalf("refresh with the rotated-out token: HTTP %d %v", code, resp)
	}

	// A second read refreshes again; the OP's rotation kills the access
	// token of the previous refresh, and the grant counts both rotations.
	second := cliCreds(t, v, "zr")
	at2, _ := second["access_token"].(string)
	if at2 == "" || at2 == at1 {
		t.Fatalf("second creds = %v", second)
	}
	if z.Introspect(t, at1)["active"] != false || z.Introspect(t, at2)["active"] != true {
		t.Fatal("after the second refresh the OP should hold only the new access token")
	}
	rt2 := chainHead(t, z, codeRT)
	if rt2.Replaces != rt1.Token {
		t.Fatalf("second rotation = %+v, want it to replace the first", rt2)
	}
	if g := grantData(t, v, "z"); jsonInt(g["refresh_count"]) != 2 || jsonInt(g["rotation_count"]) != 2 || g["status"] != "active" {
		t.Fatalf("grant after two refreshes = %v", g)
	}

	// Renewal extends the lease without a refresh.
	issued := len(z.RefreshTokens(t))
	v.MustCLI(t, "lease", "renew", second["lease_id"].(string))
	if n := len(z.RefreshTokens(t)); n != issued {
		t.Fatalf("a lease renewal issued %d refresh tokens upstream", n-issued)
	}
	if z.Introspect(t, at2)["active"] != true {
		t.Fatal("token inactive after renewal")
	}

	// Lease end revokes the access token upstream (RFC 7009); the grant,
	// whose refresh token the OP does not cascade to, keeps working.
	v.MustCLI(t, "lease", "revoke", "-sync", second["lease_id"].(string))
	if info := z.Introspect(t, at2); info["active"] != false {
		t.Fatalf("token after lease revoke introspects as %v", info)
	}
	if !chainHead(t, z, codeRT).Live {
		t.Fatal("revoking an access token killed the refresh token")
	}

	// --- token exchange (RFC 8693): the grant's fresh access token is traded
	// for one with audience "api".
	v.MustCLI(t, "write", "oauth/roles/zx", "grant_type=token_exchange", "grant=z",
		"scopes=openid,profile", "audience="+z.APIClientID)
	x := cliCreds(t, v, "zx")
	xt, _ := x["access_token"].(string)
	if xt == "" || x["revocation"] != "on_lease_end" || x["grant"] != "z" || fmt.Sprint(x["scopes"]) != "[openid profile]" {
		t.Fatalf("token_exchange creds = %v", x)
	}
	// Active for the audience, and only for it: the example OP introspects a
	// token only for a client in its audience.
	info = z.IntrospectAs(t, z.APIClientID, z.APIClientSecret, xt)
	if info["active"] != true || info["sub"] != zitadelUserID || info["client_id"] != z.ClientID ||
		fmt.Sprint(info["scope"]) != "openid profile" {
		t.Fatalf("exchanged token introspected by its audience: %v", info)
	}
	if info := z.Introspect(t, xt); info["active"] != false {
		t.Fatalf("exchanged token is active for the Vault client, so its audience is not just %q: %v", z.APIClientID, info)
	}
	exchangeRTs := bySource(z.RefreshTokens(t), "token_exchange")
	if len(exchangeRTs) != 0 {
		t.Fatalf("OP issued %d refresh tokens with the exchange, want none (the engine requests an access token)", len(exchangeRTs))
	}
	v.MustCLI(t, "lease", "revoke", "-sync", x["lease_id"].(string))
	if info := z.IntrospectAs(t, z.APIClientID, z.APIClientSecret, xt); info["active"] != false {
		t.Fatalf("exchanged token after lease revoke: %v", info)
	}
	if g := grantData(t, v, "z"); g["status"] != "active" {
		t.Fatalf("grant after the exchange lease ended = %v", g)
	}

	// --- grant delete revokes the refresh token upstream (and the access
	// token of an outstanding lease).
	last := cliCreds(t, v, "zr")
	at3 := last["access_token"].(string)
	head := chainHead(t, z, codeRT)
	v.MustCLI(t, "delete", "oauth/grants/z")
	if s, err := v.Client.Logical().Read("oauth/grants/z"); err != nil || s != nil {
		t.Fatalf("grant after delete: %v %v", s, err)
	}
	for _, rt := range z.RefreshTokens(t) {
		if rt.Token == head.Token && rt.Live {
			t.Fatal("the grant's refresh token is still live at the OP after the grant was deleted")
		}
	}
	if code, resp := z.TokenRequest(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {head.Token}}); code != http.StatusBadRequest || resp["error"] != "invalid_grant" {
		t.Fatalf("refresh with the deleted grant's token: HTTP %d %v", code, resp)
	}
	if info := z.Introspect(t, at3); info["active"] != false {
		t.Fatalf("outstanding lease's token after grant delete: %v", info)
	}

	// --- no secret in Vault's logs: the client secret and every refresh
	// token the OP issued (all of which only Vault held).
	secrets := map[string]string{"client secret": z.ClientSecret}
	for i, rt := range z.RefreshTokens(t) {
		secrets[fmt.Sprintf("refresh token #%d (%s)", i, rt.Source)] = rt.Token
	}
	if len(secrets) < 6 {
		t.Fatalf("only %d secrets to look for: %v", len(secrets), secrets)
	}
	harness.AssertNoNamedSecretsInLogs(t, v, secrets)
	assertNoSecretsInAuditResponses(t, rawAudit, secrets)
	// Access tokens are handed out in creds responses, which the HMAC'ing
	// audit device hashes; they must not be in the server log either.
	harness.AssertNoNamedSecretsInLogs(t, v, map[string]string{
		"access token 1": at1, "access token 2": at2, "access token 3": at3, "exchanged token": xt,
	})
	// Refresh tokens never were in a request body either: nowhere in the raw log.
	raw, err := os.ReadFile(rawAudit)
	if err != nil {
		t.Fatal(err)
	}
	for label, s := range secrets {
		if label != "client secret" && strings.Contains(string(raw), s) {
			t.Errorf("%s appears in the raw audit log", label)
		}
	}
	// Positive control: the raw device recorded the client secret the
	// operator wrote, so the search looked at real values.
	if !strings.Contains(string(raw), z.ClientSecret) {
		t.Fatal("raw audit log lacks the provider write's client_secret; the search proves nothing")
	}
}

// TestZitadelDeviceFlow: grants/NAME/device against the example OP's device
// authorization endpoint and UI, with the engine polling in the background.
func TestZitadelDeviceFlow(t *testing.T) {
	v, z, _ := startZitadel(t)
	out := v.MustCLI(t, "write", "-format=json", "oauth/grants/tv/device", "provider=zitadel",
		"scopes=openid,offline_access,profile")
	var started struct {
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &started); err != nil {
		t.Fatal(err)
	}
	userCode, _ := started.Data["user_code"].(string)
	verification, _ := started.Data["verification_uri"].(string)
	if userCode == "" || verification != z.URL+"device" || fmt.Sprint(started.Data["interval"]) != "5" {
		t.Fatalf("device = %s", out)
	}
	if g := grantData(t, v, "tv"); g["status"] != "pending" {
		t.Fatalf("grant before approval = %v", g)
	}
	z.ApproveDevice(t, verification, userCode)
	// The OP's poll interval is 5s.
	harness.Eventually(t, 30*time.Second, func() bool { return grantData(t, v, "tv")["status"] == "active" },
		"device flow did not complete the grant")
	device := bySource(z.RefreshTokens(t), "device_code")
	if len(device) != 1 || !device[0].Live {
		t.Fatalf("OP device-code refresh tokens = %+v", device)
	}

	v.MustCLI(t, "write", "oauth/roles/tv", "grant=tv")
	c := cliCreds(t, v, "tv")
	if !nonEmpty(c["access_token"]) || c["grant"] != "tv" || c["revocation"] != "on_lease_end" {
		t.Fatalf("creds from the device grant = %v", c)
	}
	if info := z.Introspect(t, c["access_token"].(string)); info["active"] != true || info["sub"] != zitadelUserID {
		t.Fatalf("device grant's token introspects as %v", info)
	}
	if g := grantData(t, v, "tv"); g["subject"] != zitadelUserID || jsonInt(g["rotation_count"]) != 1 {
		t.Fatalf("device grant = %v", g)
	}
	head := chainHead(t, z, device[0].Token)
	if head.Token == device[0].Token || head.Source != "refresh_token" {
		t.Fatalf("the device grant's refresh did not rotate: %+v", head)
	}
	v.MustCLI(t, "delete", "oauth/grants/tv")
	if code, resp := z.TokenRequest(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {head.Token}}); code != http.StatusBadRequest || resp["error"] != "invalid_grant" {
		t.Fatalf("refresh with the deleted device grant's token: HTTP %d %v", code, resp)
	}
	harness.AssertNoNamedSecretsInLogs(t, v, map[string]string{
		"client secret": z.ClientSecret, "device refresh token": device[0].Token, "rotated refresh token": head.Token,
	})
}

// chainHead follows the OP's rotations from refresh token first and
// returns the newest token of that chain.
func chainHead(t *testing.T, z *harness.ZitadelOP, first string) harness.ZitadelRefreshToken {
	t.Helper()
	all := z.RefreshTokens(t)
	cur, found := harness.ZitadelRefreshToken{}, false
	for _, rt := range all {
		if rt.Token == first {
			cur, found = rt, true
		}
	}
	if !found {
		t.Fatalf("the OP never issued refresh token %q...", first[:min(8, len(first))])
	}
	for {
		next := -1
		for i, rt := range all {
			if rt.Replaces == cur.Token {
				next = i
			}
		}
		if next < 0 {
			return cur
		}
		cur = all[next]
	}
}

func bySource(rts []harness.ZitadelRefreshToken, source string) []harness.ZitadelRefreshToken {
	var out []harness.ZitadelRefreshToken
	for _, rt := range rts {
		if rt.Source == source {
			out = append(out, rt)
		}
	}
	return out
}

// cliCreds reads creds through the real vault CLI, with the lease id.
func cliCreds(t *testing.T, v *harness.Vault, role string) map[string]any {
	t.Helper()
	return (&engine{v: v}).cliCreds(t, role)
}

func readData(t *testing.T, v *harness.Vault, path string) map[string]any {
	t.Helper()
	s, err := v.Client.Logical().Read(path)
	if err != nil || s == nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return s.Data
}
