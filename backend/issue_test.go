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
	if resp, err := env.do(logical.DeleteOperation, "grants/g", nil); err != nil || resp != nil {
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
	env.mustWrite("roles/x", map[string]any{"grant_type": "token_exchange", "grant": "g", "scopes": "read", "audience": "https://api.example.com"})
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
