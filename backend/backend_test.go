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

type testEnv struct {
	t       *testing.T
	b       *backend
	storage logical.Storage
	up      *fakeUpstream
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	conf := logical.TestBackendConfig()
	conf.StorageView = &logical.InmemStorage{}
	raw, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	b := raw.(*backend)
	if err := b.Initialize(context.Background(), &logical.InitializationRequest{Storage: conf.StorageView}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Cleanup(context.Background()) })
	env := &testEnv{t: t, b: b, storage: conf.StorageView, up: newFakeUpstream(t)}
	env.mustWrite("providers/up", map[string]any{
		"token_url":         env.up.URL + "/token",
		"revocation_url":    env.up.URL + "/revoke",
		"introspection_url": env.up.URL + "/introspect",
		"client_id":         "vault",
		"client_secret":     "client-secret-value",
	})
	return env
}

func (e *testEnv) do(op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	e.t.Helper()
	return e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: op, Path: path, Data: data, Storage: e.storage,
	})
}

func (e *testEnv) mustWrite(path string, data map[string]any) *logical.Response {
	e.t.Helper()
	var op logical.Operation = logical.UpdateOperation
	if checked, exists, _ := e.b.HandleExistenceCheck(context.Background(), &logical.Request{
		Operation: logical.CreateOperation, Path: path, Storage: e.storage,
	}); checked && !exists {
		op = logical.CreateOperation
	}
	resp, err := e.do(op, path, data)
	if err != nil || resp.IsError() {
		e.t.Fatalf("write %s: err=%v resp=%v", path, err, resp)
	}
	return resp
}

func (e *testEnv) creds(role string) (*logical.Response, error) {
	return e.do(logical.ReadOperation, "creds/"+role, nil)
}

func (e *testEnv) revoke(resp *logical.Response) error {
	_, err := e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RevokeOperation, Storage: e.storage, Secret: resp.Secret,
	})
	return err
}

func (e *testEnv) grant(name string) map[string]any {
	e.t.Helper()
	resp, err := e.do(logical.ReadOperation, "grants/"+name, nil)
	if err != nil || resp == nil {
		e.t.Fatalf("read grant %s: %v %v", name, err, resp)
	}
	return resp.Data
}

func statusOf(err error) int {
	var coded logical.HTTPCodedError
	if errors.As(err, &coded) {
		return coded.Code()
	}
	return 0
}

func TestConcurrentCredsOnOneGrantNeverBurnIt(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read write"), "scopes": "read,write"})
	env.mustWrite("roles/r", map[string]any{"grant": "g", "scopes": "read"})

	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := env.creds("r")
			if err == nil && resp.IsError() {
				err = resp.Error()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent creds read failed: %v", err)
		}
	}
	g := env.grant("g")
	if g["status"] != statusActive || g["rotation_count"].(int64) != n || g["refresh_count"].(int64) != n {
		t.Fatalf("grant after %d reads: %v", n, g)
	}
	if env.up.refreshes != n {
		t.Fatalf("upstream saw %d refreshes, want %d", env.up.refreshes, n)
	}
	if g["active_leases"].(int64) != n {
		t.Fatalf("active_leases = %v", g["active_leases"])
	}
}

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

func TestUpstreamErrorsMapAndOnlyInvalidGrantKills(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read"), "scopes": "read"})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})

	for _, tc := range []struct {
		code   string
		status int
		want   int
	}{
		{"", 503, http.StatusBadGateway},
		{"", 429, http.StatusTooManyRequests},
		{"invalid_client", 400, http.StatusBadGateway},
		{"invalid_scope", 400, http.StatusBadRequest},
	} {
		env.up.fail(tc.code, tc.status)
		_, err := env.creds("r")
		if statusOf(err) != tc.want {
			t.Fatalf("upstream %d %s: got %v (status %d), want %d", tc.status, tc.code, err, statusOf(err), tc.want)
		}
		if g := env.grant("g"); g["status"] != statusActive || g["last_error"] == "" {
			t.Fatalf("after %d %s the grant is %v", tc.status, tc.code, g)
		}
	}
	if _, err := env.creds("r"); err != nil {
		t.Fatalf("grant does not work after transient errors: %v", err)
	}
	env.up.fail("invalid_grant", 400)
	_, err := env.creds("r")
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "re-authorization") {
		t.Fatalf("invalid_grant: %v", err)
	}
	if g := env.grant("g"); g["status"] != statusInvalid {
		t.Fatalf("grant = %v", g)
	}
	if _, err := env.creds("r"); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("invalid grant still issues: %v", err)
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

func TestDeleteWhileUpstreamDownKeepsRevoking(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("config", map[string]any{"tidy_interval": 1})
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	env.up.fail("", 503, 503)
	resp, err := env.do(logical.DeleteOperation, "grants/g", nil)
	if err != nil || resp == nil || resp.Data["status"] != statusRevoking || len(resp.Warnings) == 0 {
		t.Fatalf("delete with upstream down: %v %v", err, resp)
	}
	if g := env.grant("g"); g["status"] != statusRevoking {
		t.Fatalf("grant = %v", g)
	}
	if _, err := env.creds("r"); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "being revoked") {
		t.Fatalf("creds of a revoking grant: %v", err)
	}
	// The background worker retries until the upstream answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, _ := env.do(logical.ReadOperation, "grants/g", nil)
		if resp == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("grant still there: %v", resp.Data)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if env.up.grantAlive("g1") {
		t.Fatal("refresh token alive after the retried revocation")
	}
}

func TestSealedRefreshTokenCannotMoveBetweenGrants(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/a", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("grants/b", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	ctx := context.Background()
	a, _ := getGrant(ctx, env.storage, "a")
	b, _ := getGrant(ctx, env.storage, "b")
	b.RefreshToken = a.RefreshToken
	if err := env.b.storeGrant(ctx, env.storage, b); err != nil {
		t.Fatal(err)
	}
	env.mustWrite("roles/r", map[string]any{"grant": "b"})
	if _, err := env.creds("r"); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("a moved sealed blob was accepted: %v", err)
	}
	raw, _ := env.storage.Get(ctx, "grants/a")
	if strings.Contains(string(raw.Value), "rt-") {
		t.Fatal("refresh token stored in the clear")
	}
}

func TestKeysRotateReseals(t *testing.T) {
	env := newTestEnv(t)
	for i := 0; i < 5; i++ {
		env.mustWrite(fmt.Sprintf("grants/g%d", i), map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	}
	resp := env.mustWrite("keys/rotate", nil)
	if resp.Data["key_version"] != 2 || resp.Data["grants_resealed"] != 5 || resp.Data["providers_resealed"] != 1 {
		t.Fatalf("rotate = %v", resp.Data)
	}
	kr, _ := env.b.sealingKeys(context.Background(), env.storage)
	if len(kr.Keys) != 1 {
		t.Fatalf("old key kept: %d keys", len(kr.Keys))
	}
	env.b.dropCaches(providerPath("up"))
	env.mustWrite("roles/r", map[string]any{"grant": "g3"})
	if _, err := env.creds("r"); err != nil {
		t.Fatalf("creds after rotation: %v", err)
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

func TestRenewReverifies(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g", "verify_on_renew": true, "ttl": 60})
	resp, err := env.creds("r")
	if err != nil {
		t.Fatal(err)
	}
	renew := func() error {
		resp.Secret.IssueTime = time.Now()
		_, err := env.b.HandleRequest(context.Background(), &logical.Request{Operation: logical.RenewOperation, Storage: env.storage, Secret: resp.Secret})
		return err
	}
	if err := renew(); err != nil {
		t.Fatalf("renew: %v", err)
	}
	env.up.mu.Lock()
	env.up.killGrant("g1")
	env.up.mu.Unlock()
	if err := renew(); err == nil || !strings.Contains(err.Error(), "no longer active") {
		t.Fatalf("renew of a dead token: %v", err)
	}
	env.mustWrite("roles/r", map[string]any{"verify_on_renew": false})
	env.do(logical.DeleteOperation, "grants/g", map[string]any{"force": true})
	if err := renew(); err == nil || !strings.Contains(err.Error(), "grant") {
		t.Fatalf("renew after grant deletion: %v", err)
	}
}

func TestValidationNamesTheField(t *testing.T) {
	env := newTestEnv(t)
	for _, tc := range []struct {
		path  string
		data  map[string]any
		field string
	}{
		{"providers/p", map[string]any{"client_id": "c", "client_secret": "s", "token_url": "http://idp.example.com/token"}, "token_url"},
		{"providers/p", map[string]any{"client_id": "c", "client_secret": "s", "token_url": "https://169.254.169.254/token"}, "token_url"},
		{"providers/p", map[string]any{"token_url": "https://idp.example.com/token", "client_secret": "s"}, "client_id"},
		{"providers/p", map[string]any{"token_url": "https://idp.example.com/token", "client_id": "c"}, "client_secret"},
		{"providers/p", map[string]any{"token_url": "https://idp.example.com/token", "client_id": "c", "client_auth": "none", "token_params": "grant_type=x"}, "token_params"},
		{"grants/g", map[string]any{"provider": "up"}, "refresh_token"},
		{"grants/g", map[string]any{"provider": "nope", "refresh_token": "x"}, "provider"},
		{"roles/r", map[string]any{"grant": "missing"}, "grant"},
		{"roles/r", map[string]any{"grant_type": "client_credentials"}, "provider"},
		{"config", map[string]any{"tidy_interval": 0}, "tidy_interval"},
	} {
		op := logical.CreateOperation
		if tc.path == "config" {
			op = logical.UpdateOperation
		}
		resp, err := env.do(op, tc.path, tc.data)
		if err == nil && (resp == nil || !resp.IsError()) {
			t.Errorf("%s %v accepted", tc.path, tc.data)
			continue
		}
		msg := fmt.Sprint(err)
		if resp != nil && resp.IsError() {
			msg = resp.Error().Error()
		}
		if !strings.Contains(msg, tc.field) {
			t.Errorf("%s %v: error %q does not name %s", tc.path, tc.data, msg, tc.field)
		}
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

func TestListGrantsKeyInfoFollowsStatus(t *testing.T) {
	env := newTestEnv(t)
	for _, name := range []string{"a", "b", "c"} {
		env.mustWrite("grants/"+name, map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	}
	env.mustWrite("roles/rb", map[string]any{"grant": "b"})
	env.up.fail("invalid_grant", 400)
	if _, err := env.creds("rb"); err == nil {
		t.Fatal("invalid_grant did not fail")
	}
	if _, err := env.do(logical.DeleteOperation, "grants/c", nil); err != nil {
		t.Fatal(err)
	}
	// A grant the index has never seen (written before the index existed,
	// or a crash between the two writes) is still listed, from the grant.
	legacy := &grantEntry{Name: "legacy", ID: randomID(), Provider: "up", Status: statusActive}
	if err := putJSON(context.Background(), env.storage, grantPrefix+"legacy", legacy); err != nil {
		t.Fatal(err)
	}

	resp, err := env.do(logical.ListOperation, "grants/", nil)
	if err != nil {
		t.Fatal(err)
	}
	info := resp.Data["key_info"].(map[string]any)
	want := map[string]string{"a": statusActive, "b": statusInvalid, "legacy": statusActive}
	if len(info) != len(want) {
		t.Fatalf("key_info = %v", info)
	}
	for name, status := range want {
		ki := info[name].(map[string]any)
		if ki["status"] != status || ki["provider"] != "up" {
			t.Fatalf("key_info[%s] = %v, want status %s", name, ki, status)
		}
	}
}

func TestLifecycleSweep(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("config", map[string]any{"tidy_interval": 1})
	env.mustWrite("grants/plain", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("grants/alive", map[string]any{"provider": "up", "refresh_token": env.up.mint("read"), "keep_alive": 1})
	env.mustWrite("grants/old", map[string]any{"provider": "up", "refresh_token": env.up.mint("read"), "max_age": 1})
	env.mustWrite("grants/idle", map[string]any{"provider": "up", "refresh_token": env.up.mint("read"), "idle_timeout": 1, "keep_alive": 3600})
	ctx := context.Background()
	due, err := env.storage.List(ctx, duePrefix)
	if err != nil || len(due) == 0 {
		t.Fatalf("due index = %v, %v", due, err)
	}
	if g, _ := getGrant(ctx, env.storage, "plain"); !g.DueAt.IsZero() {
		t.Fatal("a grant without max_age, idle_timeout or keep_alive was scheduled")
	}

	// The background worker (tidy_interval 1s) does the rest by itself.
	deadline := time.Now().Add(15 * time.Second)
	for {
		alive, old, idle := env.grant("alive"), env.grant("old"), env.grant("idle")
		if alive["refresh_count"].(int64) >= 2 && old["status"] == statusExpired && idle["status"] == statusExpired {
			if alive["last_used_at"] != "" {
				t.Fatalf("keep_alive refreshes counted as uses: %v", alive)
			}
			if alive["status"] != statusActive || alive["rotation_count"].(int64) != alive["refresh_count"].(int64) {
				t.Fatalf("keep_alive grant = %v", alive)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sweep did not act: alive=%v old=%v idle=%v", alive, old, idle)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Expired grants had their refresh tokens revoked upstream (g3, g4).
	eventuallyTrue(t, func() bool { return !env.up.grantAlive("g3") && !env.up.grantAlive("g4") })
	if !env.up.grantAlive("g1") {
		t.Fatal("the plain grant was touched")
	}
	if g := env.grant("plain"); g["refresh_count"].(int64) != 0 || g["status"] != statusActive {
		t.Fatalf("plain grant = %v", g)
	}
}

func eventuallyTrue(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
	}
}

func TestCallbackMapsARejectedCodeTo400(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("config", map[string]any{"redirect_uri": "http://127.0.0.1:8200/v1/oauth/callback"})
	env.mustWrite("providers/up", map[string]any{"authorization_url": env.up.URL + "/authorize"})
	resp := env.mustWrite("grants/web/authorize", map[string]any{"provider": "up", "scopes": "read"})
	state := resp.Data["state"].(string)
	if g := env.grant("web"); g["status"] != statusPending {
		t.Fatalf("grant = %v", g)
	}
	_, err := env.do(logical.ReadOperation, "callback", map[string]any{"state": state, "code": "not-a-code"})
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("rejected code: %v", err)
	}
	if g := env.grant("web"); g["status"] != statusInvalid || g["last_error"] == "" {
		t.Fatalf("grant after a failed flow = %v", g)
	}
	// The state was used up by the failed attempt.
	if resp, err := env.do(logical.ReadOperation, "callback", map[string]any{"state": state, "code": "x"}); err == nil && !resp.IsError() {
		t.Fatal("state accepted twice")
	}
}

func TestMaxPendingAuthorizations(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("config", map[string]any{"redirect_uri": "http://127.0.0.1:8200/v1/oauth/callback", "max_pending_authorizations": 2})
	env.mustWrite("providers/up", map[string]any{"authorization_url": env.up.URL + "/authorize"})
	for _, name := range []string{"a", "b"} {
		env.mustWrite("grants/"+name+"/authorize", map[string]any{"provider": "up"})
	}
	_, err := env.do(logical.UpdateOperation, "grants/c/authorize", map[string]any{"provider": "up"})
	if statusOf(err) != http.StatusTooManyRequests || !strings.Contains(err.Error(), "max_pending_authorizations") {
		t.Fatalf("third pending authorization: %v", err)
	}
	if resp, _ := env.do(logical.ReadOperation, "grants/c", nil); resp != nil {
		t.Fatalf("a refused authorization left a grant behind: %v", resp.Data)
	}
	// A missing redirect_uri is named.
	env.mustWrite("config", map[string]any{"redirect_uri": ""})
	resp, err := env.do(logical.UpdateOperation, "grants/d/authorize", map[string]any{"provider": "up"})
	if err != nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "redirect_uri") {
		t.Fatalf("authorize without redirect_uri: %v %v", err, resp)
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
