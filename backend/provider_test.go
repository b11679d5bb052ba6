package backend

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// attacker records every request body sent to it.
type attacker struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []string
}

func newAttacker(t *testing.T) *attacker {
	a := &attacker{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		a.mu.Lock()
		a.bodies = append(a.bodies, r.PostForm.Encode()+" "+r.Header.Get("Authorization"))
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":"stolen","token_type":"Bearer","expires_in":300}`))
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *attacker) received() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.bodies...)
}

func TestProviderEditCannotRedirectRefreshTokens(t *testing.T) {
	env := newTestEnv(t)
	rt := env.up.mint("read")
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": rt})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	evil := newAttacker(t)

	for _, field := range []string{"token_url", "revocation_url", "introspection_url"} {
		resp, err := env.do(logical.UpdateOperation, "providers/up", map[string]any{field: evil.URL + "/x"})
		if err != nil || !resp.IsError() {
			t.Fatalf("%s moved under a grant: err=%v resp=%v", field, err, resp)
		}
		msg := resp.Error().Error()
		if !strings.Contains(msg, field) || !strings.Contains(msg, "g") || !strings.Contains(msg, "rebind_grants") {
			t.Fatalf("%s: the refusal names neither the field, the grant nor the flag: %s", field, msg)
		}
	}
	if resp, err := env.creds("r"); err != nil || resp.Data["access_token"] == nil {
		t.Fatalf("the grant stopped working after refused edits: %v", err)
	}

	// With rebind_grants the edit lands and the grant fails closed.
	resp := env.mustWrite("providers/up", map[string]any{"token_url": evil.URL + "/token", "rebind_grants": true})
	if len(resp.Warnings) == 0 || !strings.Contains(resp.Warnings[0], "g") {
		t.Fatalf("rebinding does not say which grants it invalidated: %v", resp.Warnings)
	}
	if g := env.grant("g"); g["status"] != statusInvalid {
		t.Fatalf("grant after rebinding = %v", g)
	}
	if _, err := env.creds("r"); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("creds of a rebound grant: %v", err)
	}
	// Deleting the grant must not send its refresh token to the new place.
	if _, err := env.do(logical.DeleteOperation, "grants/g", nil); err != nil {
		t.Fatal(err)
	}
	for _, body := range evil.received() {
		if strings.Contains(body, rt) || strings.Contains(body, "rt-") || strings.Contains(body, "client-secret-value") {
			t.Fatalf("a refresh token or the client secret reached the new endpoint: %q", body)
		}
	}
}

func TestProviderEditWithoutGrantsIsFree(t *testing.T) {
	env := newTestEnv(t)
	other := newFakeUpstream(t)
	env.mustWrite("providers/up", map[string]any{"token_url": other.URL + "/token"})
	if resp := env.mustWrite("providers/up", map[string]any{"scopes": "read"}); resp.Data["token_url"] != other.URL+"/token" {
		t.Fatalf("provider write does not return the stored provider: %v", resp.Data)
	}
}

func TestProviderDeleteRefusedWhileTokensDependOnIt(t *testing.T) {
	env := newTestEnv(t)
	env.up.set(func(f *fakeUpstream) { f.cascade = false })
	env.mustWrite("providers/up", map[string]any{"revocation_cascades": false})
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	lease, err := env.creds("r")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := env.do(logical.DeleteOperation, "providers/up", nil)
	if err != nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "grant g") {
		t.Fatalf("provider delete with a grant: %v %v", err, resp)
	}
	// force revokes what it can, erases the grant, then deletes.
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	if _, err := env.do(logical.DeleteOperation, "roles/r", nil); err != nil {
		t.Fatal(err)
	}
	resp, err = env.do(logical.DeleteOperation, "providers/up", map[string]any{"force": true})
	if err != nil || (resp != nil && resp.IsError()) {
		t.Fatalf("forced provider delete: %v %v", err, resp)
	}
	if env.up.grantAlive("g1") || env.up.isActive(lease.Data["access_token"].(string)) {
		t.Fatal("forced delete left the refresh token or the lease's access token alive upstream")
	}
	if g, _ := env.do(logical.ReadOperation, "grants/g", nil); g != nil {
		t.Fatalf("grant survived the forced delete: %v", g.Data)
	}
	if p, _ := env.do(logical.ReadOperation, "providers/up", nil); p != nil {
		t.Fatal("provider survived the forced delete")
	}
}

func TestZeroExpiryTokensAreRevokedWithTheirGrant(t *testing.T) {
	env := newTestEnv(t)
	env.up.set(func(f *fakeUpstream) { f.cascade, f.noExpiry = false, true })
	env.mustWrite("providers/up", map[string]any{"revocation_cascades": false})
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	lease, err := env.creds("r")
	if err != nil {
		t.Fatal(err)
	}
	token := lease.Data["access_token"].(string)
	if lease.Data["revocation"] != revocationOnLeaseEnd {
		t.Fatalf("creds = %v", lease.Data)
	}
	if _, err := env.do(logical.DeleteOperation, "grants/g", nil); err != nil {
		t.Fatal(err)
	}
	if env.up.isActive(token) || !env.up.wasRevoked(token) {
		t.Fatal("an access token without expires_in outlived its deleted grant")
	}
}

// A client_credentials lease outlives its role; deleting the provider
// under it would leave its token unrevocable.
func TestClientCredentialsLeasesHoldTheirProvider(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("roles/cc", map[string]any{"grant_type": "client_credentials", "provider": "up"})
	var leases []*logical.Response
	for i := 0; i < 2; i++ {
		lease, err := env.creds("cc")
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, lease)
	}
	if _, err := env.do(logical.DeleteOperation, "roles/cc", nil); err != nil {
		t.Fatal(err)
	}
	refused := func() bool {
		resp, err := env.do(logical.DeleteOperation, "providers/up", nil)
		return err == nil && resp.IsError() && strings.Contains(resp.Error().Error(), "client_credentials lease")
	}
	if !refused() {
		t.Fatal("provider deleted under two live leases")
	}
	if err := env.revoke(leases[0]); err != nil {
		t.Fatal(err)
	}
	if !refused() {
		t.Fatal("provider deleted under a live lease")
	}
	// force revokes the token of the lease still live, then deletes.
	if resp, err := env.do(logical.DeleteOperation, "providers/up", map[string]any{"force": true}); err != nil || (resp != nil && resp.IsError()) {
		t.Fatalf("forced delete: %v %v", err, resp)
	}
	if env.up.isActive(leases[1].Data["access_token"].(string)) {
		t.Fatal("the client_credentials token outlived its forcibly deleted provider")
	}
}
