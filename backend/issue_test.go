package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

func TestCredsResponseAndDownScoping(t *testing.T) {
	env := newTestEnv(t)
	rt := env.up.mint("read write")
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": rt, "scopes": "read,write"})
	env.mustWrite("roles/r", map[string]any{"grant": "g", "scopes": "read", "ttl": "1h"})

	resp, err := env.creds("r")
	if err != nil || resp.IsError() {
		t.Fatal(err, resp)
	}
	d := resp.Data
	if d["revocation"] != revocationExpiryOnly || d["grant"] != "g" || fmt.Sprint(d["scopes"]) != "[read]" || d["token_type"] != "Bearer" {
		t.Fatalf("creds data = %v", d)
	}
	if ttl := resp.Secret.TTL; ttl > 300*time.Second || ttl < 280*time.Second {
		t.Fatalf("lease TTL %s is not bounded by the token's 300s life", ttl)
	}
	for _, v := range []any{resp.Data, resp.Secret.InternalData} {
		if strings.Contains(fmt.Sprint(v), rt) || strings.Contains(fmt.Sprint(v), "client-secret-value") {
			t.Fatalf("secret leaked: %v", v)
		}
	}
	if gr := env.grant("g"); strings.Contains(fmt.Sprint(gr), "secret") {
		t.Fatalf("grant read leaks: %v", gr)
	}
	prov, _ := env.do(logical.ReadOperation, "providers/up", nil)
	if prov.Data["client_secret_set"] != true || strings.Contains(fmt.Sprint(prov.Data), "client-secret-value") {
		t.Fatalf("provider read = %v", prov.Data)
	}

	// A role cannot widen the grant.
	resp, err = env.do(logical.CreateOperation, "roles/wide", map[string]any{"grant": "g", "scopes": "read,admin"})
	if err != nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "admin") {
		t.Fatalf("widening role accepted: %v %v", err, resp)
	}
}

func TestStrictScopes(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read write"), "scopes": "read,write"})
	env.mustWrite("roles/r", map[string]any{"grant": "g", "scopes": "read"})
	env.up.extraScope = "write" // a server that ignores the narrower scope
	_, err := env.creds("r")
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "[write]") {
		t.Fatalf("err = %v", err)
	}
	if g := env.grant("g"); g["active_leases"].(int64) != 0 || g["rotation_count"].(int64) != 1 {
		t.Fatalf("refused token was counted or rotation lost: %v", g)
	}
	env.mustWrite("roles/r", map[string]any{"strict_scopes": false})
	resp, err := env.creds("r")
	if err != nil || len(resp.Warnings) != 1 || fmt.Sprint(resp.Data["scopes"]) != "[read write]" {
		t.Fatalf("non-strict: %v %v", err, resp)
	}
}

func TestClientCredentialsLeaseRevocation(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("roles/cc", map[string]any{"grant_type": "client_credentials", "provider": "up", "scopes": "svc"})
	resp, err := env.creds("cc")
	if err != nil {
		t.Fatal(err)
	}
	token := resp.Data["access_token"].(string)
	if resp.Data["revocation"] != revocationOnLeaseEnd || !env.up.isActive(token) {
		t.Fatalf("creds = %v", resp.Data)
	}

	// Upstream down: revocation fails so that Vault retries it.
	env.up.fail("", 503)
	if err := env.revoke(resp); err == nil || errors.Is(err, logical.ErrUnrecoverable) {
		t.Fatalf("transient failure must be retryable, got %v", err)
	}
	if err := env.revoke(resp); err != nil {
		t.Fatal(err)
	}
	if env.up.isActive(token) {
		t.Fatal("token still active after revocation")
	}
	if err := env.revoke(resp); err != nil {
		t.Fatalf("second revocation is not idempotent: %v", err)
	}

	// Provider gone: no retry can help.
	resp, _ = env.creds("cc")
	env.mustWrite("providers/up", map[string]any{"revocation_url": ""})
	env.b.dropCaches(providerPath("up"))
	if err := env.revoke(resp); !errors.Is(err, logical.ErrUnrecoverable) {
		t.Fatalf("no revocation endpoint: %v", err)
	}
}

func TestNonCascadingRefreshLeasesRevokeOnEnd(t *testing.T) {
	env := newTestEnv(t)
	env.up.cascade = false
	env.mustWrite("providers/up", map[string]any{"revocation_cascades": false})
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read"), "scopes": "read"})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	resp, err := env.creds("r")
	if err != nil || resp.Data["revocation"] != revocationOnLeaseEnd {
		t.Fatal(err, resp)
	}
	second, _ := env.creds("r")
	if err := env.revoke(resp); err != nil {
		t.Fatal(err)
	}
	if env.up.isActive(resp.Data["access_token"].(string)) {
		t.Fatal("lease end did not revoke the token")
	}
	if g := env.grant("g"); g["active_leases"].(int64) != 1 {
		t.Fatalf("active_leases = %v", g["active_leases"])
	}
	// Deleting the grant revokes the refresh token and the outstanding token.
	if resp, err := env.do(logical.DeleteOperation, "grants/g", nil); err != nil || resp.IsError() || len(resp.Warnings) > 0 {
		t.Fatal(err, resp)
	}
	if env.up.isActive(second.Data["access_token"].(string)) {
		t.Fatal("grant deletion left an outstanding access token alive")
	}
	if env.up.grantAlive("g1") {
		t.Fatal("grant deletion left the refresh token alive")
	}
}

func TestTokenReuseSharesAndRevokesWithLastLease(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("roles/cc", map[string]any{"grant_type": "client_credentials", "provider": "up", "token_reuse": true})
	first, err := env.creds("cc")
	if err != nil {
		t.Fatal(err)
	}
	second, err := env.creds("cc")
	if err != nil {
		t.Fatal(err)
	}
	token := first.Data["access_token"].(string)
	if second.Data["access_token"] != token {
		t.Fatal("token_reuse issued a second token")
	}
	if err := env.revoke(first); err != nil {
		t.Fatal(err)
	}
	if !env.up.isActive(token) {
		t.Fatal("shared token revoked while a lease still holds it")
	}
	if err := env.revoke(second); err != nil {
		t.Fatal(err)
	}
	if env.up.isActive(token) {
		t.Fatal("shared token alive after its last lease ended")
	}
	third, _ := env.creds("cc")
	if third.Data["access_token"] == token {
		t.Fatal("a revoked shared token was handed out again")
	}
}

func TestTokenReuseCountsEveryConcurrentLease(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("roles/cc", map[string]any{"grant_type": "client_credentials", "provider": "up", "token_reuse": true})
	const n = 50
	leases := make([]*logical.Response, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			resp, err := env.creds("cc")
			if err != nil {
				t.Error(err)
				return
			}
			leases[i] = resp
		}(i)
	}
	wg.Wait()
	stored, err := getSharedTokens(context.Background(), env.storage, "cc")
	if err != nil || len(stored.Tokens) != 1 || stored.Tokens[stored.Current].Leases != n {
		t.Fatalf("stored shared tokens = %+v (%v), want one token with %d leases", stored, err, n)
	}
	token := leases[0].Data["access_token"].(string)
	for i, resp := range leases {
		if env.up.isActive(token) != true {
			t.Fatalf("token revoked after %d of %d leases ended", i, n)
		}
		if err := env.revoke(resp); err != nil {
			t.Fatal(err)
		}
	}
	if env.up.isActive(token) {
		t.Fatal("token alive after the last lease")
	}
	if stored, _ := getSharedTokens(context.Background(), env.storage, "cc"); len(stored.Tokens) != 0 {
		t.Fatalf("shared tokens left behind: %+v", stored)
	}
}

func TestTokenExchangeRole(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read write"), "scopes": "read,write"})
	xrole := map[string]any{"grant_type": "token_exchange", "grant": "g", "scopes": "read", "audience": "https://api.example.com"}
	// The provider allows no audience until its operator says so.
	if resp, err := env.do(logical.CreateOperation, "roles/x", xrole); err != nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "allowed_audiences") {
		t.Fatalf("token_exchange role with an audience the provider does not allow: %v %v", err, resp)
	}
	env.mustWrite("providers/up", map[string]any{"allowed_audiences": "https://api.example.com"})
	env.mustWrite("roles/x", xrole)
	resp, err := env.creds("x")
	if err != nil {
		t.Fatal(err)
	}
	token := resp.Data["access_token"].(string)
	if resp.Data["revocation"] != revocationOnLeaseEnd || fmt.Sprint(resp.Data["scopes"]) != "[read]" || !env.up.isActive(token) {
		t.Fatalf("creds = %v", resp.Data)
	}
	if g := env.grant("g"); g["active_leases"].(int64) != 1 {
		t.Fatalf("grant = %v", g)
	}
	if err := env.revoke(resp); err != nil {
		t.Fatal(err)
	}
	if env.up.isActive(token) || !env.up.grantAlive("g1") {
		t.Fatal("lease end must revoke the exchanged token and leave the grant")
	}
	if g := env.grant("g"); g["active_leases"].(int64) != 0 {
		t.Fatalf("grant = %v", g)
	}
	// A role needs a grant, and cannot widen it.
	for _, data := range []map[string]any{
		{"grant_type": "token_exchange"},
		{"grant_type": "token_exchange", "grant": "g", "scopes": "admin"},
	} {
		if resp, err := env.do(logical.CreateOperation, "roles/bad", data); err == nil && !resp.IsError() {
			t.Fatalf("role %v accepted", data)
		}
	}
}

// The role's scope subset check ran only at role write: narrowing the
// grant afterwards let the role ask for more than the grant carries.
func TestScopeSubsetIsCheckedAtIssue(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read write"), "scopes": "read,write"})
	env.mustWrite("roles/r", map[string]any{"grant": "g", "scopes": "write"})
	env.mustWrite("grants/g", map[string]any{"scopes": "read"})
	_, err := env.creds("r")
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "write") {
		t.Fatalf("creds with scopes the grant no longer carries: %v", err)
	}
	if env.up.refreshCount() != 0 {
		t.Fatal("the refresh was sent upstream before the check")
	}
}

// A token strict_scopes refuses is nobody's: revoke it where that does not
// kill the grant.
func TestStrictScopesRevokesTheRefusedToken(t *testing.T) {
	env := newTestEnv(t)
	env.up.set(func(f *fakeUpstream) { f.cascade, f.extraScope = false, "admin" })
	env.mustWrite("providers/up", map[string]any{"revocation_cascades": false})
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g", "scopes": "read"})
	if _, err := env.creds("r"); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("creds with an over-wide token: %v", err)
	}
	var issued []string
	env.up.set(func(f *fakeUpstream) {
		for tok := range f.access {
			issued = append(issued, tok)
		}
	})
	if len(issued) != 1 || env.up.isActive(issued[0]) {
		t.Fatalf("the refused token is alive upstream: %v", issued)
	}
	if !env.up.grantAlive("g1") {
		t.Fatal("revoking the refused token killed the grant")
	}
}

func TestLeaseTTL(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		role   time.Duration
		expiry time.Time
		skew   time.Duration
		want   time.Duration
	}{
		{"no expiry: the role's ttl", 5 * time.Minute, time.Time{}, 10 * time.Second, 5 * time.Minute},
		{"no expiry, no ttl: Vault's default", 0, time.Time{}, 10 * time.Second, 0},
		{"token outlives the role's ttl", 5 * time.Minute, now.Add(time.Hour), 10 * time.Second, 5 * time.Minute},
		{"token shorter than the ttl: its life less the skew", time.Hour, now.Add(5 * time.Minute), 10 * time.Second, 5*time.Minute - 10*time.Second},
		{"no ttl: the token's life less the skew", 0, now.Add(5 * time.Minute), 10 * time.Second, 5*time.Minute - 10*time.Second},
		{"too short to spare the skew", time.Hour, now.Add(15 * time.Second), 10 * time.Second, 15 * time.Second},
		{"already expired: one second", time.Hour, now.Add(-time.Minute), 10 * time.Second, time.Second},
	} {
		if got := leaseTTL(tc.role, tc.expiry, tc.skew, now); got != tc.want {
			t.Errorf("%s: leaseTTL = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestCheckScopes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		role     []string
		strict   bool
		returned *string
		wantErr  bool
		wantWarn bool
	}{
		{"role without scopes takes anything", nil, true, ptr("read admin"), false, false},
		{"no scope in the response", []string{"read"}, true, nil, false, false},
		{"exactly the role's", []string{"read"}, true, ptr("read"), false, false},
		{"narrower than the role's", []string{"read", "write"}, true, ptr("read"), false, false},
		{"wider, strict: refused", []string{"read"}, true, ptr("read admin"), true, false},
		{"wider, not strict: a warning", []string{"read"}, false, ptr("read admin"), false, true},
	} {
		tok := &oauthclient.Token{AccessToken: "x"}
		if tc.returned != nil {
			tok.ScopeReturned, tok.Scopes = true, strings.Fields(*tc.returned)
		}
		warnings, err := checkScopes(&roleEntry{Name: "r", Scopes: tc.role, StrictScopes: tc.strict}, tok)
		if (err != nil) != tc.wantErr || (len(warnings) > 0) != tc.wantWarn {
			t.Errorf("%s: warnings=%v err=%v", tc.name, warnings, err)
		}
		if err != nil && !strings.Contains(err.Error(), "admin") {
			t.Errorf("%s: the refusal does not name the extra scope: %v", tc.name, err)
		}
	}
}

func ptr(s string) *string { return &s }

// A shared token belongs to the grant it came from: a grant deleted and
// created again under the same name must not inherit it.
func TestTokenReuseNeverCrossesToARecreatedGrant(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g", "token_reuse": true})
	first, err := env.creds("r")
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := env.do(logical.DeleteOperation, "grants/g", map[string]any{"force": true}); err != nil || resp.IsError() {
		t.Fatalf("forced delete: %v %v", err, resp)
	}
	if _, err := env.creds("r"); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("creds of a deleted grant's reused token: %v", err)
	}
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	second, err := env.creds("r")
	if err != nil {
		t.Fatal(err)
	}
	if second.Data["access_token"] == first.Data["access_token"] {
		t.Fatal("the re-created grant was handed the old grant's token")
	}
}

// allowed_audiences holds at issue too: narrowing it stops roles written
// before, without a call upstream.
func TestTokenExchangeAudienceCheckedAtIssue(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("providers/up", map[string]any{"allowed_audiences": "https://a.example.com,https://b.example.com"})
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/x", map[string]any{"grant_type": "token_exchange", "grant": "g", "audience": "https://b.example.com"})
	env.mustWrite("providers/up", map[string]any{"allowed_audiences": "https://a.example.com"})
	if _, err := env.creds("x"); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "b.example.com") {
		t.Fatalf("creds with a disallowed audience: %v", err)
	}
	if env.up.refreshCount() != 0 {
		t.Fatal("the grant was refreshed for a refused exchange")
	}
}

// The role's shared-token lock was held across the upstream call for a new
// token: a slow upstream stalled grant reads and lease releases of the role.
func TestSharedTokenFetchDoesNotBlockTheRole(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g", "token_reuse": true})
	env.up.set(func(f *fakeUpstream) { f.expiresIn = 20 }) // under min_remaining: the next read fetches anew
	first, err := env.creds("r")
	if err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	env.up.set(func(f *fakeUpstream) { f.gate, f.expiresIn = gate, 300 })
	fetched := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() {
			_, err := env.creds("r")
			fetched <- err
		}()
	}
	time.Sleep(100 * time.Millisecond) // let them reach the upstream
	done := make(chan struct{})
	go func() {
		env.grant("g")
		env.revoke(first)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		close(gate)
		t.Fatal("a grant read and a lease release waited for the upstream call of a new shared token")
	}
	close(gate)
	for i := 0; i < 4; i++ {
		if err := <-fetched; err != nil {
			t.Fatal(err)
		}
	}
	if n := env.up.refreshCount(); n != 2 {
		t.Fatalf("%d refreshes upstream for one expired shared token (want the first and one more)", n)
	}
}
