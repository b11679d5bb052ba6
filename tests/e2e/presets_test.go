package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/imitations"
)

// presetCase is what docs/providers/NAME.md promises for one preset.
type presetCase struct {
	name string
	// leaseRevokes: a lease's end revokes its access token upstream
	// (on_lease_end); otherwise leases are expiry_only (no revocation
	// endpoint, or revocation there would kill the grant).
	leaseRevokes bool
	// grantRevokes: deleting a grant ends the authorization upstream;
	// otherwise the grant is erased with a warning.
	grantRevokes bool
	// fields are response_fields the creds response must carry.
	fields []string
	// scopes to authorize, where the provider requires some.
	scopes string
	// mode is the imitation's variant (imitations.Options.Mode).
	mode string
	// tokenLife: the access token's lifetime the creds response must
	// show (from expires_in, or the preset's default_token_ttl).
	tokenLife time.Duration
	// grantLife: the refresh token's own lifetime the grant's expires_at
	// must show (refresh_token_expires_in); 0 when the provider sends none.
	grantLife time.Duration
}

// TestPresetCycles runs each preset through the real Vault against a wire
// imitation of its provider (tests/imitations, written from the provider's
// public documentation): authorize in the browser, creds, lease revoke,
// import and delete a grant, a rate limit (the grant stays), the app
// removed by the user and an expired refresh token (the grant becomes
// invalid).
func TestPresetCycles(t *testing.T) {
	v := harness.StartVault(t)
	callback := v.Addr + "/v1/oauth/callback"
	v.MustCLI(t, "write", "oauth/config", "redirect_uri="+callback, "upstream_timeout=5s")
	cases := []presetCase{
		{name: "github", leaseRevokes: true, grantRevokes: true, tokenLife: 8 * time.Hour, grantLife: 15897600 * time.Second},
		{name: "gitlab", grantRevokes: true},
		{name: "google", grantRevokes: true, scopes: "openid,email"},
		{name: "microsoft"},
		// Slack joins scopes with commas, in requests and responses.
		{name: "slack", grantRevokes: true, fields: []string{"team_id", "team_name"}, scopes: "chat:write,channels:read"},
		// Only the JSON token requests Atlassian documents are accepted.
		{name: "atlassian", mode: "json-only"},
		// No expires_in: the preset's two hours.
		{name: "salesforce", leaseRevokes: true, grantRevokes: true, fields: []string{"instance_url", "id"}, tokenLife: 2 * time.Hour},
		{name: "bitbucket"},
	}
	if len(cases) != len(imitations.Names) {
		t.Fatalf("%d cases for %d imitations", len(cases), len(imitations.Names))
	}
	var secrets []string
	for _, pc := range cases {
		t.Run(pc.name, func(t *testing.T) { secrets = append(secrets, presetCycle(t, v, callback, pc)...) })
	}
	// No client secret or refresh token reached the server or audit log.
	for _, path := range []string{v.LogPath, v.AuditLogPath} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range secrets {
			if strings.Contains(string(data), secret) {
				t.Errorf("%s holds a secret of the preset cycles (%d characters)", path, len(secret))
			}
		}
	}
	t.Logf("%d client secrets and refresh tokens looked for in the server and audit logs", len(secrets))
}

// presetCycle runs one preset and returns the secrets it handled.
func presetCycle(t *testing.T, v *harness.Vault, callback string, pc presetCase) []string {
	im := imitations.Start(t, pc.name, imitations.Options{RedirectURI: callback, Mode: pc.mode})
	ep := im.Endpoints()
	provider, grant, role := "p-"+pc.name, "g-"+pc.name, "r-"+pc.name
	// The preset's behaviour, the imitation's addresses.
	v.MustCLI(t, "write", "oauth/providers/"+provider, "preset="+pc.name,
		"client_id="+im.ClientID, "client_secret="+im.ClientSecret,
		"token_url="+ep.TokenURL, "authorization_url="+ep.AuthorizationURL,
		"revocation_url="+ep.RevocationURL, "introspection_url="+ep.IntrospectionURL,
		"device_authorization_url="+ep.DeviceAuthorizationURL)

	// Authorization in the browser.
	args := []string{"write", "-format=json", "oauth/grants/" + grant + "/authorize", "provider=" + provider}
	if pc.scopes != "" {
		args = append(args, "scopes="+pc.scopes)
	}
	out := v.MustCLI(t, args...)
	var started struct {
		Data struct {
			AuthorizationURL string `json:"authorization_url"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &started); err != nil || started.Data.AuthorizationURL == "" {
		t.Fatalf("authorize: %v %s", err, out)
	}
	back := im.Authorize(t, started.Data.AuthorizationURL)
	if status, body := get(t, back); status != http.StatusOK || !strings.Contains(body, `"status":"active"`) {
		t.Fatalf("callback: HTTP %d %s", status, body)
	}

	// creds, twice (the second refresh uses the rotated token where the
	// provider rotates), then the lease's end.
	v.MustCLI(t, "write", "oauth/roles/"+role, "grant="+grant)
	var s map[string]any
	for i := 0; i < 2; i++ {
		sec, err := v.Client.Logical().Read("oauth/creds/" + role)
		if err != nil || sec == nil {
			t.Fatalf("creds #%d: %v", i+1, err)
		}
		s = sec.Data
		s["lease_id"] = sec.LeaseID
	}
	token, _ := s["access_token"].(string)
	if token == "" || !im.AccessTokenActive(token) {
		t.Fatalf("creds gave an access token the provider does not accept: %v", s["revocation"])
	}
	if pc.scopes != "" {
		if got := fmt.Sprint(s["scopes"]); got != "["+strings.ReplaceAll(sortedList(pc.scopes), ",", " ")+"]" {
			t.Errorf("creds scopes = %s, want those authorized (%s)", got, pc.scopes)
		}
	}
	if pc.tokenLife > 0 {
		exp, err := time.Parse(time.RFC3339, fmt.Sprint(s["expires_at"]))
		if left := time.Until(exp); err != nil || left > pc.tokenLife || left < pc.tokenLife-time.Minute {
			t.Errorf("creds expires_at = %v, want %v from now", s["expires_at"], pc.tokenLife)
		}
	}
	g := grantData(t, v, grant)
	if pc.grantLife > 0 {
		exp, err := time.Parse(time.RFC3339, fmt.Sprint(g["expires_at"]))
		if left := time.Until(exp); err != nil || left > pc.grantLife || left < pc.grantLife-time.Minute {
			t.Errorf("grant expires_at = %v, want the refresh token's end %v from now", g["expires_at"], pc.grantLife)
		}
	} else if g["expires_at"] != "" {
		t.Errorf("grant expires_at = %v, want none", g["expires_at"])
	}
	for _, f := range pc.fields {
		if !nonEmpty(s[f]) {
			t.Errorf("creds lacks response field %s", f)
		}
	}
	for k := range s {
		if strings.Contains(k, "refresh") || k == "id_token" {
			t.Errorf("creds carries %s", k)
		}
	}
	wantRevocation := "expiry_only"
	if pc.leaseRevokes {
		wantRevocation = "on_lease_end"
	}
	if s["revocation"] != wantRevocation {
		t.Fatalf("revocation = %v, want %s", s["revocation"], wantRevocation)
	}
	v.MustCLI(t, "lease", "revoke", "-sync", s["lease_id"].(string))
	if active := im.AccessTokenActive(token); active == pc.leaseRevokes {
		t.Errorf("after the lease ended the access token is active=%v, want %v", active, !pc.leaseRevokes)
	}
	if g := grantData(t, v, grant); g["status"] != "active" {
		t.Fatalf("grant after the lease ended = %v (a lease's end must not kill the grant)", g["status"])
	}

	// An imported grant, used and deleted.
	rt := im.Mint(t, nil)
	secrets := []string{im.ClientSecret, rt}
	if _, err := v.CLIWithStdin(t, rt, "write", "oauth/grants/i-"+pc.name, "provider="+provider, "refresh_token=-"); err != nil {
		t.Fatal(err)
	}
	v.MustCLI(t, "write", "oauth/roles/ri-"+pc.name, "grant=i-"+pc.name)
	if _, err := v.Client.Logical().Read("oauth/creds/ri-" + pc.name); err != nil {
		t.Fatalf("creds from an imported grant: %v", err)
	}
	v.MustCLI(t, "delete", "oauth/roles/ri-"+pc.name)
	del, err := v.Client.Logical().Delete("oauth/grants/i-" + pc.name)
	if err != nil {
		t.Fatalf("grant delete: %v", err)
	}
	if alive := im.GrantAlive(rt); alive == pc.grantRevokes {
		t.Errorf("after the grant was deleted its authorization is alive=%v, want %v", alive, !pc.grantRevokes)
	}
	if !pc.grantRevokes && (del == nil || !strings.Contains(strings.Join(del.Warnings, " "), "not revoked upstream")) {
		t.Errorf("deleting a grant the provider cannot revoke must say so: %v", del)
	}

	// Rate limited: the provider's answer, the grant untouched.
	im.RateLimitNext(1)
	_, err = v.Client.Logical().Read("oauth/creds/" + role)
	if code := httpStatus(err); code != http.StatusTooManyRequests && code != http.StatusBadGateway {
		t.Fatalf("creds while rate limited: %v, want 429 or 502", err)
	}
	if g := grantData(t, v, grant); g["status"] != "active" {
		t.Fatalf("a rate limit changed the grant: %v", g)
	}
	// The user removed the app: the grant fails closed, and says why.
	im.RevokeApp()
	_, err = v.Client.Logical().Read("oauth/creds/" + role)
	if code := httpStatus(err); code != http.StatusBadRequest {
		t.Fatalf("creds after the app was removed: %v, want 400 (grant: %v)", err, grantData(t, v, grant))
	}
	g = grantData(t, v, grant)
	if g["status"] != "invalid" || !nonEmpty(g["last_error"]) {
		t.Fatalf("grant after the app was removed = %v (%v)", g["status"], g["last_error"])
	}
	t.Logf("%s: revocation %s; last_error after the app was removed: %v", pc.name, s["revocation"], g["last_error"])

	// The refresh token ran out at the provider: the grant fails closed.
	im2 := imitations.Start(t, pc.name, imitations.Options{RedirectURI: callback, Mode: pc.mode})
	ep2 := im2.Endpoints()
	v.MustCLI(t, "write", "oauth/providers/"+provider+"-2", "preset="+pc.name,
		"client_id="+im2.ClientID, "client_secret="+im2.ClientSecret,
		"token_url="+ep2.TokenURL, "authorization_url="+ep2.AuthorizationURL,
		"revocation_url="+ep2.RevocationURL, "introspection_url="+ep2.IntrospectionURL,
		"device_authorization_url="+ep2.DeviceAuthorizationURL)
	rt2 := im2.Mint(t, nil)
	secrets = append(secrets, im2.ClientSecret, rt2)
	mustCLIStdin(t, v, rt2, "write", "oauth/grants/x-"+pc.name, "provider="+provider+"-2", "refresh_token=-")
	v.MustCLI(t, "write", "oauth/roles/rx-"+pc.name, "grant=x-"+pc.name)
	im2.ExpireRefreshTokens()
	if _, err := v.Client.Logical().Read("oauth/creds/rx-" + pc.name); httpStatus(err) != http.StatusBadRequest {
		t.Fatalf("creds after the refresh token expired: %v, want 400", err)
	}
	if g := grantData(t, v, "x-"+pc.name); g["status"] != "invalid" {
		t.Fatalf("grant after its refresh token expired = %v (%v)", g["status"], g["last_error"])
	} else {
		t.Logf("%s: last_error after the refresh token expired: %v", pc.name, g["last_error"])
	}
	return secrets
}

// httpStatus is the HTTP status of a Vault API error; 0 without an error,
// -1 for an error that is not Vault's answer.
func httpStatus(err error) int {
	if err == nil {
		return 0
	}
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return -1
	}
	return re.StatusCode
}

// sortedList sorts a comma-separated list.
func sortedList(list string) string {
	items := strings.Split(list, ",")
	sort.Strings(items)
	return strings.Join(items, ",")
}
