package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestOwnerOffboardingFailsClosed: a grant owned by a Vault entity stops
// issuing and renewing the moment that entity is disabled or deleted, and
// verify_on_renew denies renewal of a token the upstream no longer honours.
func TestOwnerOffboardingFailsClosed(t *testing.T) {
	e := startEngine(t, harness.UpstreamOptions{})
	var entity struct {
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	out := e.v.MustCLI(t, "write", "-format=json", "identity/entity", "name=alice")
	if err := json.Unmarshal([]byte(out), &entity); err != nil || entity.Data.ID == "" {
		t.Fatalf("creating entity: %v %s", err, out)
	}
	owner := entity.Data.ID

	rt, _ := e.up.Mint(t, e.up.ClientID, "offline_access api:read", "alice")
	e.v.MustCLI(t, "write", "oauth/grants/alice", "provider=local", "refresh_token="+rt, "owner_entity_id="+owner)
	e.v.MustCLI(t, "write", "oauth/roles/alice", "grant=alice", "ttl=60s", "verify_on_renew=true")
	if g := e.grant(t, "alice"); g["owner_entity_id"] != owner {
		t.Fatalf("grant = %v", g)
	}

	lease := e.cliCreds(t, "alice")
	leaseID := lease["lease_id"].(string)
	e.v.MustCLI(t, "lease", "renew", leaseID)

	// Offboarding: the entity is disabled.
	e.v.MustCLI(t, "write", "identity/entity/id/"+owner, "disabled=true")
	if _, err := e.creds("alice"); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("creds for a disabled owner: %v", err)
	}
	if _, err := e.v.CLI(t, "lease", "renew", leaseID); err == nil {
		t.Fatal("renewal for a disabled owner succeeded")
	}
	e.v.MustCLI(t, "write", "identity/entity/id/"+owner, "disabled=false")
	e.v.MustCLI(t, "lease", "renew", leaseID)

	// verify_on_renew: the upstream revokes the token on its own.
	token := lease["access_token"].(string)
	revokeUpstream(t, e.up, token)
	if _, err := e.v.CLI(t, "lease", "renew", leaseID); err == nil || !strings.Contains(err.Error(), "no longer active") {
		t.Fatalf("renewal of a token revoked upstream: %v", err)
	}

	// The entity is deleted: the grant fails closed for good.
	e.v.MustCLI(t, "delete", "identity/entity/id/"+owner)
	if _, err := e.creds("alice"); err == nil || !strings.Contains(err.Error(), "no longer exists") {
		t.Fatalf("creds for a deleted owner: %v", err)
	}
}

// revokeUpstream revokes a token at the upstream directly (RFC 7009), as an
// administrator of the authorization server would.
func revokeUpstream(t *testing.T, up *harness.Upstream, token string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, up.Endpoint(t, "revocation_endpoint"),
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(up.ClientID, up.ClientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upstream revocation: HTTP %d", resp.StatusCode)
	}
}
