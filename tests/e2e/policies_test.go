package e2e

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestPolicies installs the policy files of docs/policies into a real Vault,
// gives tokens those policies (the CI one through a real AppRole login) and
// checks that each can do what docs/security.md says and nothing more.
func TestPolicies(t *testing.T) {
	e := startEngine(t, harness.UpstreamOptions{})
	root := e.v.Client

	for name, file := range map[string]string{
		"oauth-operator": "operator.hcl",
		"oauth-consumer": "consumer.hcl",
		"oauth-ci":       "ci.hcl",
	} {
		data, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "docs", "policies", file))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := root.Logical().Write("sys/policies/acl/"+name, map[string]any{"policy": string(data)}); err != nil {
			t.Fatalf("installing %s as %s: %v", file, name, err)
		}
	}

	// What an operator would have set up: one grant, the consumer's role,
	// another service's role and a CI role.
	e.importGrant(t, "g", "api:read api:write")
	e.v.MustCLI(t, "write", "oauth/roles/reader", "grant=g", "scopes=api:read")
	e.v.MustCLI(t, "write", "oauth/roles/writer", "grant=g", "scopes=api:write")
	e.v.MustCLI(t, "write", "oauth/roles/ci-deploy", "grant_type=client_credentials", "provider=local", "scopes=api:read")

	consumer := clientWithToken(t, root, tokenWithPolicy(t, root, "oauth-consumer"))
	ci := clientWithToken(t, root, appRoleLogin(t, root, "oauth-ci"))
	operator := clientWithToken(t, root, tokenWithPolicy(t, root, "oauth-operator"))

	t.Run("consumer", func(t *testing.T) {
		lease := mustIssue(t, consumer, "reader")
		if _, err := consumer.Sys().Renew(lease.LeaseID, 60); err != nil {
			t.Fatalf("renewing its own lease: %v", err)
		}
		if _, err := consumer.Logical().Write("sys/leases/renew/"+lease.LeaseID, nil); err != nil {
			t.Fatalf("renewing its own lease (path form): %v", err)
		}

		other := mustIssue(t, root, "writer")
		assertDenied(t, "revoke another role's lease", consumer.Sys().RevokeWithOptions(&api.RevokeOptions{LeaseID: other.LeaseID}))
		assertDenied(t, "revoke another role's lease (body form)", consumer.Sys().Revoke(other.LeaseID))
		if err := consumer.Sys().RevokeWithOptions(&api.RevokeOptions{LeaseID: lease.LeaseID, Sync: true}); err != nil {
			t.Fatalf("revoking its own lease: %v", err)
		}
		second := mustIssue(t, consumer, "reader")
		if err := consumer.Sys().Revoke(second.LeaseID); err != nil {
			t.Fatalf("revoking its own lease (body form): %v", err)
		}

		assertDeniedEverywhereBut(t, consumer, "reader")
		assertReadDenied(t, consumer, "oauth/creds/ci-deploy")
	})

	t.Run("ci", func(t *testing.T) {
		lease := mustIssue(t, ci, "ci-deploy")
		if err := ci.Sys().RevokeWithOptions(&api.RevokeOptions{LeaseID: lease.LeaseID, Sync: true}); err != nil {
			t.Fatalf("revoking its own lease: %v", err)
		}
		assertDeniedEverywhereBut(t, ci, "ci-deploy")
		assertReadDenied(t, ci, "oauth/creds/reader")
	})

	t.Run("operator", func(t *testing.T) {
		up := e.up
		mustWrite(t, operator, "oauth/config", map[string]any{"tidy_interval": "2s"})
		mustWrite(t, operator, "oauth/providers/other", map[string]any{
			"issuer": up.URL, "client_id": up.ClientID, "client_secret": up.ClientSecret,
		})
		if p := mustRead(t, operator, "oauth/providers/other"); p.Data["client_secret_set"] != true || !nonEmpty(p.Data["token_url"]) {
			t.Fatalf("provider as the operator reads it = %v", p.Data)
		}
		rt, _ := up.Mint(t, up.ClientID, "offline_access api:read", "bob")
		mustWrite(t, operator, "oauth/grants/ops", map[string]any{"provider": "other", "refresh_token": rt, "scopes": "api:read"})
		if g := mustRead(t, operator, "oauth/grants/ops"); g.Data["status"] != "active" {
			t.Fatalf("grant the operator imported = %v", g.Data)
		}
		mustWrite(t, operator, "oauth/roles/ops", map[string]any{"grant": "ops", "ttl": "5m"})
		if keys := mustList(t, operator, "oauth/grants"); !containsAll(keys, "g", "ops") {
			t.Fatalf("LIST oauth/grants = %v", keys)
		}
		if keys := mustList(t, operator, "oauth/roles"); !containsAll(keys, "reader", "writer", "ci-deploy", "ops") {
			t.Fatalf("LIST oauth/roles = %v", keys)
		}
		if keys := mustList(t, operator, "oauth/providers"); !containsAll(keys, "local", "other") {
			t.Fatalf("LIST oauth/providers = %v", keys)
		}
		if r := mustWrite(t, operator, "oauth/keys/rotate", nil); r == nil || r.Data["key_version"] == nil {
			t.Fatalf("keys/rotate = %v", r)
		}
		mustWrite(t, operator, "oauth/tidy", nil)
		if s := mustRead(t, operator, "oauth/tidy/status"); !nonEmpty(s.Data["started_at"]) {
			t.Fatalf("tidy/status = %v", s.Data)
		}

		// No tokens for operators: not from their own role, not from a
		// consumer's.
		assertReadDenied(t, operator, "oauth/creds/ops")
		assertReadDenied(t, operator, "oauth/creds/reader")
		assertReadDenied(t, operator, "oauth/creds/ci-deploy")
		// Nothing outside the mount's own paths.
		_, err := operator.Logical().Write("sys/policies/acl/oauth-consumer", map[string]any{"policy": `path "oauth/*" { capabilities = ["read"] }`})
		assertDenied(t, "rewrite a policy", err)
		_, err = operator.Logical().Write("sys/mounts/oauth/tune", map[string]any{"max_lease_ttl": "87600h"})
		assertDenied(t, "tune the mount", err)
		assertDenied(t, "disable the mount", operator.Sys().Unmount("oauth"))

		// Incident response: the leases of one role, listed and revoked.
		lease := mustIssue(t, consumer, "reader")
		if keys := mustList(t, operator, "sys/leases/lookup/oauth/creds/reader"); len(keys) == 0 {
			t.Fatal("operator lists no leases under oauth/creds/reader/")
		}
		if err := operator.Sys().RevokePrefix("oauth/creds/reader"); err != nil {
			t.Fatalf("revoke-prefix as the operator: %v", err)
		}
		if _, err := root.Sys().Lookup(lease.LeaseID); err == nil {
			t.Fatalf("lease %s still exists after revoke-prefix", lease.LeaseID)
		}

		mustDelete(t, operator, "oauth/roles/ops")
		mustDelete(t, operator, "oauth/grants/ops")
		if g, err := root.Logical().Read("oauth/grants/ops"); err != nil || g != nil {
			t.Fatalf("grant ops after the operator deleted it: %v %v", g, err)
		}
	})
}

// assertDeniedEverywhereBut checks that c, whose policy grants creds of role
// only, gets 403 on every other path of the mount, reads and writes alike.
func assertDeniedEverywhereBut(t *testing.T, c *api.Client, role string) {
	t.Helper()
	for _, p := range []string{
		"oauth/config", "oauth/providers/local", "oauth/grants/g", "oauth/roles/" + role,
		"oauth/tidy/status", "oauth/creds/writer",
	} {
		assertReadDenied(t, c, p)
	}
	for _, p := range []string{"oauth/providers", "oauth/grants", "oauth/roles"} {
		_, err := c.Logical().List(p)
		assertDenied(t, "LIST "+p, err)
	}
	for p, data := range map[string]map[string]any{
		"oauth/config":             {"redirect_uri": "https://attacker.example/callback"},
		"oauth/providers/local":    {"token_url": "https://attacker.example/token"},
		"oauth/providers/evil":     {"token_url": "https://attacker.example/token", "client_id": "x", "client_auth": "none"},
		"oauth/grants/g":           {"max_age": "1s"},
		"oauth/grants/g/device":    {},
		"oauth/roles/" + role:      {"scopes": "api:read,api:write"},
		"oauth/roles/new":          {"grant": "g"},
		"oauth/keys/rotate":        nil,
		"oauth/tidy":               nil,
		"oauth/grants/g/authorize": {},
	} {
		_, err := c.Logical().Write(p, data)
		assertDenied(t, "write "+p, err)
	}
	for _, p := range []string{"oauth/grants/g", "oauth/roles/" + role, "oauth/providers/local"} {
		_, err := c.Logical().Delete(p)
		assertDenied(t, "delete "+p, err)
	}
}

func assertReadDenied(t *testing.T, c *api.Client, path string) {
	t.Helper()
	s, err := c.Logical().Read(path)
	if err == nil {
		t.Errorf("read %s: allowed (data %v), want 403 permission denied", path, dataOf(s))
		return
	}
	assertDenied(t, "read "+path, err)
}

// assertDenied wants Vault's own ACL refusal: HTTP 403, "permission denied".
func assertDenied(t *testing.T, what string, err error) {
	t.Helper()
	var re *api.ResponseError
	switch {
	case err == nil:
		t.Errorf("%s: allowed, want 403 permission denied", what)
	case !errors.As(err, &re):
		t.Errorf("%s: %v, want a 403 response", what, err)
	case re.StatusCode != http.StatusForbidden || !strings.Contains(err.Error(), "permission denied"):
		t.Errorf("%s: HTTP %d %v, want 403 permission denied", what, re.StatusCode, err)
	}
}

// mustIssue reads creds/role as c and checks that it got a real lease.
func mustIssue(t *testing.T, c *api.Client, role string) *api.Secret {
	t.Helper()
	s, err := c.Logical().Read("oauth/creds/" + role)
	if err != nil {
		t.Fatalf("read oauth/creds/%s: %v", role, err)
	}
	if s == nil {
		t.Fatalf("read oauth/creds/%s: no response", role)
	}
	token, _ := s.Data["access_token"].(string)
	if token == "" || !strings.HasPrefix(s.LeaseID, "oauth/creds/"+role+"/") || s.LeaseDuration <= 0 {
		t.Fatalf("read oauth/creds/%s: lease %q (%ds), access_token %q", role, s.LeaseID, s.LeaseDuration, token)
	}
	return s
}

func mustRead(t *testing.T, c *api.Client, path string) *api.Secret {
	t.Helper()
	s, err := c.Logical().Read(path)
	if err != nil || s == nil {
		t.Fatalf("read %s: %v (response %v)", path, err, s)
	}
	return s
}

func mustWrite(t *testing.T, c *api.Client, path string, data map[string]any) *api.Secret {
	t.Helper()
	s, err := c.Logical().Write(path, data)
	if err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return s
}

func mustDelete(t *testing.T, c *api.Client, path string) {
	t.Helper()
	if _, err := c.Logical().Delete(path); err != nil {
		t.Fatalf("delete %s: %v", path, err)
	}
}

func mustList(t *testing.T, c *api.Client, path string) []string {
	t.Helper()
	s, err := c.Logical().List(path)
	if err != nil || s == nil {
		t.Fatalf("list %s: %v (response %v)", path, err, s)
	}
	raw, _ := s.Data["keys"].([]any)
	keys := make([]string, 0, len(raw))
	for _, k := range raw {
		keys = append(keys, k.(string))
	}
	return keys
}

func containsAll(have []string, want ...string) bool {
	set := make(map[string]bool, len(have))
	for _, h := range have {
		set[strings.TrimSuffix(h, "/")] = true
	}
	for _, w := range want {
		if !set[w] {
			return false
		}
	}
	return true
}

func dataOf(s *api.Secret) map[string]any {
	if s == nil {
		return nil
	}
	return s.Data
}

// tokenWithPolicy creates a token with policy (and Vault's default policy,
// as any token gets unless told otherwise).
func tokenWithPolicy(t *testing.T, root *api.Client, policy string) string {
	t.Helper()
	s, err := root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{policy}, TTL: "1h"})
	if err != nil || s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		t.Fatalf("creating a token with policy %s: %v", policy, err)
	}
	return s.Auth.ClientToken
}

// appRoleLogin sets up AppRole as docs/security.md shows and logs in the
// way a CI job does: role_id plus a single-use secret_id.
func appRoleLogin(t *testing.T, root *api.Client, policy string) string {
	t.Helper()
	if err := root.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, root, "auth/approle/role/ci", map[string]any{
		"token_policies": policy, "token_ttl": "15m", "token_max_ttl": "1h",
		"secret_id_ttl": "10m", "secret_id_num_uses": 1,
	})
	roleID, _ := mustRead(t, root, "auth/approle/role/ci/role-id").Data["role_id"].(string)
	secretID, _ := mustWrite(t, root, "auth/approle/role/ci/secret-id", nil).Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		t.Fatalf("AppRole role_id %q, secret_id set %v", roleID, secretID != "")
	}

	anon := clientWithToken(t, root, "")
	s, err := anon.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID})
	if err != nil || s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		t.Fatalf("AppRole login: %v", err)
	}
	if !containsAll(s.Auth.Policies, policy) {
		t.Fatalf("AppRole token policies = %v, want %s", s.Auth.Policies, policy)
	}
	// The secret_id was single-use.
	if _, err := anon.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID}); err == nil {
		t.Fatal("a single-use secret_id logged in twice")
	}
	return s.Auth.ClientToken
}

func clientWithToken(t *testing.T, root *api.Client, token string) *api.Client {
	t.Helper()
	c, err := root.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.ClearToken()
	if token != "" {
		c.SetToken(token)
	}
	return c
}
