package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// TestAuthorizeAndCallback: grants/NAME/authorize, a browser at the real
// upstream, and the browser's return to the real Vault's unauthenticated
// callback.
func TestAuthorizeAndCallback(t *testing.T) {
	v := harness.StartVault(t)
	callback := v.Addr + "/v1/oauth/callback"
	up := harness.StartUpstream(t, harness.UpstreamOptions{RedirectURIs: []string{callback}})
	v.MustCLI(t, "write", "oauth/config", "redirect_uri="+callback)
	v.MustCLI(t, "write", "oauth/providers/local", "issuer="+up.URL, "client_id="+up.ClientID, "client_secret="+up.ClientSecret)

	out := v.MustCLI(t, "write", "-format=json", "oauth/grants/web/authorize", "provider=local", "scopes=offline_access,api:read")
	var started struct {
		Data struct {
			AuthorizationURL string `json:"authorization_url"`
			State            string `json:"state"`
			ExpiresAt        string `json:"expires_at"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &started); err != nil || started.Data.AuthorizationURL == "" || started.Data.State == "" {
		t.Fatalf("authorize: %v %s", err, out)
	}
	if strings.Contains(out, "code_verifier=") || !strings.Contains(started.Data.AuthorizationURL, "code_challenge_method=S256") {
		t.Fatalf("authorization_url must carry the S256 challenge, never the verifier: %s", started.Data.AuthorizationURL)
	}
	if g := grantData(t, v, "web"); g["status"] != "pending" {
		t.Fatalf("grant before the callback = %v", g)
	}

	back := followAuthorization(t, started.Data.AuthorizationURL, callback)
	if back.Query().Get("state") != started.Data.State {
		t.Fatalf("upstream returned state %q", back.Query().Get("state"))
	}
	// The browser lands on Vault's callback, with no Vault token.
	status, body := get(t, back.String())
	if status != http.StatusOK || !strings.Contains(body, `"status":"active"`) {
		t.Fatalf("callback: HTTP %d %s", status, body)
	}
	if g := grantData(t, v, "web"); g["status"] != "active" || !strings.Contains(body, "api:read") {
		t.Fatalf("grant after the callback = %v", g)
	}
	v.MustCLI(t, "write", "oauth/roles/web", "grant=web", "scopes=api:read")
	if s, err := v.Client.Logical().Read("oauth/creds/web"); err != nil || !nonEmpty(s.Data["access_token"]) {
		t.Fatalf("creds from an authorized grant: %v", err)
	}
	// The state is single-use.
	if status, _ := get(t, back.String()); status != http.StatusBadRequest {
		t.Fatalf("replayed callback: HTTP %d", status)
	}
	if status, _ := get(t, callback+"?state=forged&code=x"); status != http.StatusBadRequest {
		t.Fatalf("forged state: HTTP %d", status)
	}

	// Re-authorizing a working grant (wider scopes) leaves it as it is
	// until the new authorization completes.
	out = v.MustCLI(t, "write", "-format=json", "oauth/grants/web/authorize", "scopes=offline_access,api:read,api:write")
	if err := json.Unmarshal([]byte(out), &started); err != nil {
		t.Fatal(err)
	}
	if g := grantData(t, v, "web"); g["status"] != "active" || strings.Contains(fmt.Sprint(g["scopes"]), "api:write") {
		t.Fatalf("grant during re-authorization = %v", g)
	}
	back = followAuthorization(t, started.Data.AuthorizationURL, callback)
	if status, body := get(t, back.String()); status != http.StatusOK {
		t.Fatalf("callback: HTTP %d %s", status, body)
	}
	if g := grantData(t, v, "web"); g["status"] != "active" || !strings.Contains(fmt.Sprint(g["scopes"]), "api:write") {
		t.Fatalf("grant after re-authorization = %v", g)
	}
}

// TestDeviceFlow: grants/NAME/device, the user approving the code at the
// real upstream's device page, and the engine's background polling.
func TestDeviceFlow(t *testing.T) {
	e := startEngine(t, harness.UpstreamOptions{})
	out := e.v.MustCLI(t, "write", "-format=json", "oauth/grants/tv/device", "provider=local", "scopes=offline_access,api:read")
	var started struct {
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &started); err != nil {
		t.Fatal(err)
	}
	userCode, _ := started.Data["user_code"].(string)
	verification, _ := started.Data["verification_uri"].(string)
	if userCode == "" || verification == "" || started.Data["interval"] == nil {
		t.Fatalf("device: %s", out)
	}
	if g := e.grant(t, "tv"); g["status"] != "pending" {
		t.Fatalf("grant before approval = %v", g)
	}

	harness.ApproveDevice(t, verification, userCode, "alice")
	harness.Eventually(t, 30*time.Second, func() bool { return e.grant(t, "tv")["status"] == "active" },
		"device flow did not complete the grant")
	e.v.MustCLI(t, "write", "oauth/roles/tv", "grant=tv")
	e.mustCreds(t, "tv")
}

func get(t *testing.T, target string) (int, string) {
	t.Helper()
	resp, err := http.Get(target)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func grantData(t *testing.T, v *harness.Vault, name string) map[string]any {
	t.Helper()
	s, err := v.Client.Logical().Read("oauth/grants/" + name)
	if err != nil || s == nil {
		t.Fatalf("read grant %s: %v", name, err)
	}
	return s.Data
}
