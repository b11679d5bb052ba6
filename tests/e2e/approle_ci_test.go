package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestAppRoleCIJob runs a CI job the way docs/consumers.md shows it, with
// the real vault CLI: log in with AppRole (role_id plus a single-use
// secret_id, sent on stdin), read creds of a client_credentials role and a
// token_exchange role (both on_lease_end), and at the end revoke the job's
// own Vault token, as a runner does when the job ends. Every token the job
// got must be inactive upstream within a second of that, and the grant
// behind the token_exchange role must live on and keep issuing.
func TestAppRoleCIJob(t *testing.T) {
	e := startEngine(t, harness.UpstreamOptions{})
	root := e.v.Client

	// What the operator set up once (docs/consumers.md, CI section).
	policy, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "docs", "policies", "ci.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, root, "sys/policies/acl/oauth-ci", map[string]any{"policy": string(policy)})
	_, upstreamGrant := e.importGrant(t, "deploy-bot", "api:read api:write")
	e.v.MustCLI(t, "write", "oauth/providers/local", "allowed_audiences=https://api.example.com")
	e.v.MustCLI(t, "write", "oauth/roles/ci-deploy", "grant_type=client_credentials", "provider=local", "scopes=api:read")
	e.v.MustCLI(t, "write", "oauth/roles/ci-exchange", "grant_type=token_exchange", "grant=deploy-bot",
		"scopes=api:read", "audience=https://api.example.com")
	if err := root.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, root, "auth/approle/role/ci", map[string]any{
		"token_policies": "oauth-ci", "token_ttl": "15m", "token_max_ttl": "1h",
		"secret_id_ttl": "10m", "secret_id_num_uses": 1,
	})
	roleID := strings.TrimSpace(e.v.MustCLI(t, "read", "-field=role_id", "auth/approle/role/ci/role-id"))
	// One secret_id per job, handed to the job by the CI system.
	newSecretID := func() string {
		return strings.TrimSpace(e.v.MustCLI(t, "write", "-f", "-field=secret_id", "auth/approle/role/ci/secret-id"))
	}

	// --- the job ---------------------------------------------------------
	secretID := newSecretID()
	login := func(secretID string) (string, error) {
		out, err := e.v.CLIAs(t, "", secretID, "write", "-field=token", "auth/approle/login", "role_id="+roleID, "secret_id=-")
		return strings.TrimSpace(out), err
	}
	jobToken, err := login(secretID)
	if err != nil || jobToken == "" {
		t.Fatalf("AppRole login: %v", err)
	}
	if _, err := login(secretID); err == nil {
		t.Fatal("a secret_id with secret_id_num_uses=1 logged in twice")
	}

	type got struct {
		role, leaseID, token string
	}
	var tokens []got
	for _, role := range []string{"ci-deploy", "ci-exchange", "ci-deploy", "ci-exchange"} {
		out := e.v.MustCLIAs(t, jobToken, "", "read", "-format=json", "oauth/creds/"+role)
		var s struct {
			LeaseID string `json:"lease_id"`
			Data    struct {
				AccessToken string `json:"access_token"`
				Revocation  string `json:"revocation"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("vault read oauth/creds/%s: %v", role, err)
		}
		if s.Data.AccessToken == "" || s.Data.Revocation != "on_lease_end" {
			t.Fatalf("oauth/creds/%s: revocation %q, access_token set %v", role, s.Data.Revocation, s.Data.AccessToken != "")
		}
		if st := e.up.TokenState(t, s.Data.AccessToken); !st.Active {
			t.Fatalf("oauth/creds/%s: fresh token not active upstream: %+v", role, st)
		}
		tokens = append(tokens, got{role, s.LeaseID, s.Data.AccessToken})
	}
	// The form a job script uses.
	if tok := strings.TrimSpace(e.v.MustCLIAs(t, jobToken, "", "read", "-field=access_token", "oauth/creds/ci-deploy")); tok == "" {
		t.Fatal("vault read -field=access_token printed nothing")
	} else {
		tokens = append(tokens, got{"ci-deploy", "", tok})
	}

	// --- the job ends: the runner revokes the job's token ------------------
	e.v.MustCLIAs(t, jobToken, "", "token", "revoke", "-self")
	revoked := time.Now()
	deadline := revoked.Add(time.Second)
	pending := tokens
	for len(pending) > 0 && time.Now().Before(deadline) {
		var still []got
		for _, g := range pending {
			if e.up.TokenState(t, g.token).Active {
				still = append(still, g)
			}
		}
		pending = still
		if len(pending) > 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	took := time.Since(revoked)
	for _, g := range pending {
		t.Errorf("%s token (lease %s) still active upstream %s after the job's Vault token was revoked",
			g.role, g.leaseID, took.Round(time.Millisecond))
	}
	if len(pending) == 0 {
		t.Logf("all %d tokens of the job inactive upstream %s after `vault token revoke -self` returned",
			len(tokens), took.Round(time.Millisecond))
	}
	// The upstream's own RFC 7662 introspection agrees.
	for _, g := range tokens {
		if info := e.up.Introspect(t, g.token); info["active"] != false {
			t.Errorf("%s token introspects as %v after the job ended", g.role, info)
		}
	}
	if _, err := e.v.CLIAs(t, jobToken, "", "token", "lookup"); err == nil {
		t.Error("the job's Vault token still works after revoke -self")
	}

	// --- the grant survives ------------------------------------------------
	if g := e.grant(t, "deploy-bot"); g["status"] != "active" {
		t.Fatalf("grant after the job = %v", g)
	}
	if ug := e.up.Grant(t, upstreamGrant); !ug.Found {
		t.Fatal("the upstream grant is gone after the job's tokens were revoked")
	}
	// The next job: a new secret_id, and the grant still issues.
	next, err := login(newSecretID())
	if err != nil {
		t.Fatalf("the next job's login: %v", err)
	}
	out := e.v.MustCLIAs(t, next, "", "read", "-field=access_token", "oauth/creds/ci-exchange")
	if st := e.up.TokenState(t, strings.TrimSpace(out)); !st.Active {
		t.Fatalf("the next job's token is not active: %+v", st)
	}
	e.v.MustCLIAs(t, next, "", "token", "revoke", "-self")
}
