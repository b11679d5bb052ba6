package backend

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestPresetFillsWhatTheWriteDoesNotSet(t *testing.T) {
	env := newTestEnv(t)
	resp := env.mustWrite("providers/gh", map[string]any{
		"preset": "github", "client_id": "Iv1.abc", "client_secret": "s",
		"authorization_url": "https://ghe.example.com/login/oauth/authorize",
	})
	d := resp.Data
	for field, want := range map[string]any{
		"token_url":         "https://github.com/login/oauth/access_token",
		"revocation_url":    "https://api.github.com/applications/Iv1.abc/token",
		"authorization_url": "https://ghe.example.com/login/oauth/authorize",
		"revocation_style":  "github",
		"client_auth":       "client_secret_post",
		"default_token_ttl": int64(8 * 3600),
		"preset":            "github",
	} {
		if got, ok := d[field]; !ok || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", field, got, want)
		}
	}
	fields := d["preset_fields"].([]string)
	if !slices.Contains(fields, "token_url") || slices.Contains(fields, "authorization_url") {
		t.Errorf("preset_fields = %v: token_url came from the preset, authorization_url did not", fields)
	}

	// A later client_id re-fills the preset's revocation URL; an explicit
	// field written later stays the operator's.
	env.mustWrite("providers/gh", map[string]any{"client_id": "Iv1.new", "default_token_ttl": "1h"})
	env.mustWrite("providers/gh", map[string]any{"client_secret": "s2"})
	d = env.mustRead("providers/gh")
	if d["revocation_url"] != "https://api.github.com/applications/Iv1.new/token" {
		t.Errorf("revocation_url = %v after the client_id changed", d["revocation_url"])
	}
	if d["default_token_ttl"] != int64(3600) || strings.Contains(fmt.Sprint(d["preset_fields"]), "default_token_ttl") {
		t.Errorf("default_token_ttl = %v (preset_fields %v): the operator's value must stay", d["default_token_ttl"], d["preset_fields"])
	}
	// Giving the preset again resets every field the write does not set.
	env.mustWrite("providers/gh", map[string]any{"preset": "github"})
	if d = env.mustRead("providers/gh"); d["authorization_url"] != "https://github.com/login/oauth/authorize" || d["default_token_ttl"] != int64(8*3600) {
		t.Errorf("preset re-applied: authorization_url %v, default_token_ttl %v", d["authorization_url"], d["default_token_ttl"])
	}
}

func TestPresetMicrosoftTenant(t *testing.T) {
	env := newTestEnv(t)
	d := env.mustWrite("providers/entra", map[string]any{"preset": "microsoft", "client_id": "c", "client_secret": "s"}).Data
	if d["token_url"] != "https://login.microsoftonline.com/common/oauth2/v2.0/token" || d["tenant"] != "common" ||
		d["revocation_style"] != "none" || fmt.Sprint(d["scopes"]) != "[offline_access]" {
		t.Fatalf("microsoft preset = %v", d)
	}
	d = env.mustWrite("providers/entra", map[string]any{"tenant": "contoso.onmicrosoft.com"}).Data
	if d["device_authorization_url"] != "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode" {
		t.Fatalf("tenant not filled in: %v", d["device_authorization_url"])
	}
	for _, tc := range []struct {
		path string
		data map[string]any
	}{
		{"providers/entra", map[string]any{"tenant": "../evil"}},
		{"providers/gh", map[string]any{"preset": "github", "client_id": "c", "client_secret": "s", "tenant": "x"}},
		{"providers/x", map[string]any{"token_url": "https://idp.example.com/token", "client_id": "c", "client_secret": "s", "tenant": "x"}},
		{"providers/x", map[string]any{"preset": "okta", "client_id": "c", "client_secret": "s"}},
	} {
		resp, err := env.do(logical.CreateOperation, tc.path, tc.data)
		if tc.path == "providers/entra" {
			resp, err = env.do(logical.UpdateOperation, tc.path, tc.data)
		}
		if err != nil || !resp.IsError() {
			t.Errorf("%s %v: accepted (%v)", tc.path, tc.data, err)
		}
	}
}

func TestBehaviourFieldsRefuseWhatWouldLeakOrBreakTheFlow(t *testing.T) {
	env := newTestEnv(t)
	base := func(field string, v any) map[string]any {
		return map[string]any{"token_url": env.up.URL + "/token", "client_id": "c", "client_secret": "s", field: v}
	}
	for _, tc := range []struct {
		field string
		v     any
	}{
		{"response_fields", "refresh_token"},
		{"response_fields", "id_token"},
		{"response_fields", "authed_user.access_token"},
		{"response_fields", "access_token"},
		{"response_fields", "scopes"}, // would hide the creds field
		{"response_fields", "a..b"},
		{"auth_params", map[string]any{"state": "x"}},
		{"auth_params", map[string]any{"redirect_uri": "https://evil.example.com"}},
		{"auth_params", map[string]any{"code_challenge_method": "plain"}},
		{"invalid_grant_errors", "bad/code"},
		{"revocation_style", "carrier-pigeon"},
	} {
		resp, err := env.do(logical.CreateOperation, "providers/x", base(tc.field, tc.v))
		if err != nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), tc.field) {
			t.Errorf("%s=%v: %v %v, want a 400 naming the field", tc.field, tc.v, resp, err)
		}
	}
}

func TestResponseFieldsDefaultTTLAndNoRevocation(t *testing.T) {
	env := newTestEnv(t)
	env.up.set(func(f *fakeUpstream) {
		f.noExpiry = true
		f.fields = map[string]any{"instance_url": "https://acme.my.salesforce.com", "team": map[string]any{"id": "T1"}, "signature": "sig"}
	})
	env.mustWrite("providers/up", map[string]any{
		"response_fields": "instance_url,team.id,missing", "default_token_ttl": "2h", "revocation_style": "none",
	})
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	resp, err := env.creds("r")
	if err != nil || resp.IsError() {
		t.Fatal(err, resp)
	}
	if resp.Data["instance_url"] != "https://acme.my.salesforce.com" || resp.Data["team_id"] != "T1" {
		t.Errorf("creds data = %v", resp.Data)
	}
	if _, ok := resp.Data["signature"]; ok {
		t.Error("a field not in response_fields was passed on")
	}
	// No expires_in: the provider's default lifetime, never "forever".
	exp, err := time.Parse(time.RFC3339, resp.Data["expires_at"].(string))
	if err != nil || exp.Sub(env.clock.Now()) > 2*time.Hour || exp.Sub(env.clock.Now()) < 2*time.Hour-time.Minute {
		t.Errorf("expires_at = %v (now %v), want 2h on", resp.Data["expires_at"], env.clock.Now())
	}
	if resp.Secret.TTL > 2*time.Hour {
		t.Errorf("lease TTL %v beyond the token's default lifetime", resp.Secret.TTL)
	}
	// revocation_style none: nothing to revoke at lease end, and no call.
	if resp.Data["revocation"] != revocationExpiryOnly {
		t.Errorf("revocation = %v, want expiry_only", resp.Data["revocation"])
	}
	if err := env.revoke(resp); err != nil {
		t.Fatal(err)
	}
	if !env.up.isActive(resp.Data["access_token"].(string)) {
		t.Error("a provider with revocation_style none was asked to revoke")
	}
}

func TestInvalidGrantErrorsMarkTheGrantInvalid(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	// Without the mapping a provider's own code is upstream trouble: the
	// grant stays active.
	env.up.fail("bad_refresh_verification_code", 200)
	if _, err := env.creds("r"); statusOf(err) != 502 {
		t.Fatalf("unmapped code: %v", err)
	}
	if g := env.grant("g"); g["status"] != statusActive {
		t.Fatalf("status = %v after an unmapped provider code", g["status"])
	}
	env.mustWrite("providers/up", map[string]any{"invalid_grant_errors": "bad_refresh_verification_code"})
	env.up.fail("bad_refresh_verification_code", 200)
	if _, err := env.creds("r"); statusOf(err) != 400 {
		t.Fatalf("mapped code: %v", err)
	}
	g := env.grant("g")
	if g["status"] != statusInvalid || !strings.Contains(fmt.Sprint(g["last_error"]), "bad_refresh_verification_code") {
		t.Fatalf("grant = %v %v, want invalid naming the provider's code", g["status"], g["last_error"])
	}
}

func TestRefreshTokenLifetimeIsKeptAlive(t *testing.T) {
	env := newTestEnv(t)
	const life = 10 * 24 * 3600 // ten days
	env.up.set(func(f *fakeUpstream) { f.refreshLifetime = life })
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	if _, err := env.creds("r"); err != nil {
		t.Fatal(err)
	}
	start := env.clock.Now()
	g := env.grant("g")
	exp, err := time.Parse(time.RFC3339, g["expires_at"].(string))
	if err != nil || exp.Sub(start) > life*time.Second || exp.Sub(start) < life*time.Second-time.Minute {
		t.Fatalf("expires_at = %v, want the refresh token's end %v on", g["expires_at"], time.Duration(life)*time.Second)
	}
	before := env.up.refreshCount()
	// Not yet: a day before the end is the time.
	env.clock.Advance(8 * 24 * time.Hour)
	env.sweep()
	if env.up.refreshCount() != before {
		t.Fatal("refreshed long before the refresh token's end")
	}
	env.clock.Advance(25 * time.Hour)
	env.sweep()
	if env.up.refreshCount() != before+1 {
		t.Fatalf("refreshes %d -> %d: the grant was not refreshed before its refresh token ran out", before, env.up.refreshCount())
	}
	// The rotated refresh token came with a new lifetime, and the grant
	// waits for its next keep-alive. (Token lifetimes count on the real
	// clock, the sweep on the test clock, so compare the schedule only.)
	g = env.grant("g")
	if g["status"] != statusActive || g["rotation_count"] != int64(2) {
		t.Fatalf("after the keep-alive: status %v, rotation_count %v", g["status"], g["rotation_count"])
	}
	if stored := env.storedGrant("g"); stored.DueAt.IsZero() || stored.RefreshExpiresAt.IsZero() {
		t.Fatalf("after the keep-alive: due %v, refresh token end %v; want both set", stored.DueAt, stored.RefreshExpiresAt)
	}
	if g["last_used_at"] != formatTime(start) {
		t.Errorf("the keep-alive counted as a use: last_used_at %v", g["last_used_at"])
	}
}

// A GitHub-style grant revocation refreshes first (only an access token
// names the authorization) and then deletes the authorization. When the
// delete fails, the refresh token the refresh rotated in must be kept: the
// retry with the old, now dead one would find the grant "already dead"
// and erase it while the authorization lives on upstream.
func TestGitHubStyleRevocationRetryUsesTheRotatedToken(t *testing.T) {
	env := newTestEnv(t)
	var mu sync.Mutex
	var deletes []int
	gh := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Method != http.MethodDelete || r.URL.Path != "/applications/vault/grant" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		status := http.StatusNoContent
		if len(deletes) == 0 {
			status = http.StatusServiceUnavailable
		}
		deletes = append(deletes, status)
		w.WriteHeader(status)
	}))
	t.Cleanup(gh.Close)
	env.mustWrite("providers/gh", map[string]any{
		"token_url": env.up.URL + "/token", "revocation_url": gh.URL + "/applications/vault/token",
		"revocation_style": "github", "client_id": "vault", "client_secret": "s", "client_auth": "client_secret_post",
	})
	env.mustWrite("grants/g", map[string]any{"provider": "gh", "refresh_token": env.up.mint("read")})

	resp, err := env.do(logical.DeleteOperation, "grants/g", nil)
	if err != nil || resp == nil || resp.Data["status"] != statusRevoking {
		t.Fatalf("first delete = %v %v, want the grant kept as revoking", resp, err)
	}
	env.clock.Advance(time.Hour) // past the retry backoff
	env.sweep()
	mu.Lock()
	got := append([]int(nil), deletes...)
	mu.Unlock()
	if len(got) != 2 || got[1] != http.StatusNoContent {
		t.Fatalf("DELETE .../grant answered %v; want a failed attempt and a retry that reached the authorization", got)
	}
	if g, _ := env.do(logical.ReadOperation, "grants/g", nil); g != nil {
		t.Fatalf("grant still there after the revocation succeeded: %v", g.Data)
	}
}
