package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// engine is a Vault with the plugin mounted and a provider "local" that
// points at a running upstream through issuer discovery.
type engine struct {
	v  *harness.Vault
	up *harness.Upstream
}

func startEngine(t *testing.T, opts harness.UpstreamOptions) *engine {
	t.Helper()
	up := harness.StartUpstream(t, opts)
	v := harness.StartVault(t)
	v.MustCLI(t, "write", "oauth/config", "tidy_interval=1s", "upstream_timeout=5s")
	v.MustCLI(t, "write", "oauth/providers/local",
		"issuer="+up.URL, "client_id="+up.ClientID, "client_secret="+up.ClientSecret)
	return &engine{v: v, up: up}
}

// importGrant mints a refresh token upstream and imports it as grant name.
func (e *engine) importGrant(t *testing.T, name, scope string) (refreshToken, upstreamGrantID string) {
	t.Helper()
	refreshToken, upstreamGrantID = e.up.Mint(t, e.up.ClientID, "offline_access "+scope, "alice")
	e.v.MustCLI(t, "write", "oauth/grants/"+name, "provider=local",
		"refresh_token="+refreshToken, "scopes="+strings.ReplaceAll(scope, " ", ","))
	return refreshToken, upstreamGrantID
}

func (e *engine) creds(role string) (*api.Secret, error) {
	return e.v.Client.Logical().Read("oauth/creds/" + role)
}

func (e *engine) mustCreds(t *testing.T, role string) *api.Secret {
	t.Helper()
	s, err := e.creds(role)
	if err != nil {
		t.Fatalf("read oauth/creds/%s: %v", role, err)
	}
	return s
}

func (e *engine) grant(t *testing.T, name string) map[string]any {
	t.Helper()
	s, err := e.v.Client.Logical().Read("oauth/grants/" + name)
	if err != nil {
		t.Fatalf("read grant %s: %v", name, err)
	}
	if s == nil {
		return nil
	}
	return s.Data
}

func jsonInt(v any) int64 {
	n, _ := v.(json.Number).Int64()
	return n
}

// cliCreds reads creds through the real vault CLI, as a user would.
func (e *engine) cliCreds(t *testing.T, role string) map[string]any {
	t.Helper()
	out := e.v.MustCLI(t, "read", "-format=json", "oauth/creds/"+role)
	var s struct {
		LeaseID       string         `json:"lease_id"`
		LeaseDuration int            `json:"lease_duration"`
		Data          map[string]any `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("vault read output: %v", err)
	}
	s.Data["lease_id"] = s.LeaseID
	s.Data["lease_duration"] = s.LeaseDuration
	return s.Data
}

func TestImportedGrantIssuesDownScopedToken(t *testing.T) {
	e := startEngine(t, harness.UpstreamOptions{})
	e.importGrant(t, "deploy-bot", "api:read api:write")
	e.v.MustCLI(t, "write", "oauth/roles/reader", "grant=deploy-bot", "scopes=api:read", "ttl=10m")

	c := e.cliCreds(t, "reader")
	token, _ := c["access_token"].(string)
	if token == "" || c["token_type"] != "Bearer" || c["grant"] != "deploy-bot" {
		t.Fatalf("creds = %v", c)
	}
	if fmt.Sprint(c["scopes"]) != "[api:read]" {
		t.Fatalf("scopes = %v", c["scopes"])
	}
	// The upstream's own introspection: active, exactly the role's scopes.
	info := e.up.Introspect(t, token)
	if info["active"] != true || info["scope"] != "api:read" {
		t.Fatalf("upstream introspection = %v", info)
	}
	// The lease never outlives the upstream token (300s).
	if d := c["lease_duration"].(int); d > 300 || d < 250 {
		t.Fatalf("lease_duration = %d, want <= 300 (token life)", d)
	}
	if exp, err := time.Parse(time.RFC3339, c["expires_at"].(string)); err != nil || time.Until(exp) > 301*time.Second {
		t.Fatalf("expires_at = %v (%v)", c["expires_at"], err)
	}
}

func TestCascadingProviderLeasesEndByExpiryOnly(t *testing.T) {
	e := startEngine(t, harness.UpstreamOptions{})
	e.importGrant(t, "g", "api:read")
	e.v.MustCLI(t, "write", "oauth/roles/r", "grant=g")

	c := e.cliCreds(t, "r")
	if c["revocation"] != "expiry_only" {
		t.Fatalf("revocation = %v on a cascading provider", c["revocation"])
	}
	e.v.MustCLI(t, "lease", "revoke", "-sync", c["lease_id"].(string))
	// Revoking the token at this server would have killed the grant; the
	// engine must not have called the revocation endpoint at all.
	if n := len(e.up.Stats(t).Revocations); n != 0 {
		t.Fatalf("lease revocation sent %d revocation requests upstream", n)
	}
	if info := e.up.Introspect(t, c["access_token"].(string)); info["active"] != true {
		t.Fatalf("expiry_only token was revoked: %v", info)
	}
	if next := e.cliCreds(t, "r"); !nonEmpty(next["access_token"]) {
		t.Fatal("grant stopped working after a lease revocation")
	}
	if g := e.grant(t, "g"); g["status"] != "active" || jsonInt(g["active_leases"]) != 1 {
		t.Fatalf("grant = %v", g)
	}
}

func TestConcurrentCredsOnOneGrantAtRotatingUpstream(t *testing.T) {
	e := startEngine(t, harness.UpstreamOptions{})
	_, upstreamGrant := e.importGrant(t, "shared", "api:read")
	e.v.MustCLI(t, "write", "oauth/roles/r", "grant=shared")

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := e.creds("r")
			if err == nil && (s == nil || !nonEmpty(s.Data["access_token"])) {
				err = fmt.Errorf("empty creds")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	elapsed := time.Since(start)
	failures := 0
	for err := range errs {
		if err != nil {
			failures++
			t.Errorf("creds read failed: %v", err)
		}
	}
	t.Logf("%d concurrent creds reads on one grant: %d errors in %s (%.0f/s)", n, failures, elapsed.Round(time.Millisecond), n/elapsed.Seconds())

	if _, err := e.creds("r"); err != nil {
		t.Fatalf("grant burned: %v", err)
	}
	g := e.grant(t, "shared")
	stats := e.up.Stats(t)
	if g["status"] != "active" || jsonInt(g["rotation_count"]) != n+1 {
		t.Fatalf("grant = %v", g)
	}
	if got := stats.RotationsByGrant[upstreamGrant]; int64(got) != jsonInt(g["rotation_count"]) {
		t.Fatalf("rotation_count %v, upstream counted %d rotations", g["rotation_count"], got)
	}
	if stats.TokenErrors["invalid_grant"] != 0 {
		t.Fatalf("upstream saw %d invalid_grant errors: a refresh token was replayed", stats.TokenErrors["invalid_grant"])
	}
}

func TestClientCredentialsLeaseEndRevokesUpstream(t *testing.T) {
	e := startEngine(t, harness.UpstreamOptions{})
	e.v.MustCLI(t, "write", "oauth/roles/svc", "grant_type=client_credentials", "provider=local", "scopes=api:read")

	c := e.cliCreds(t, "svc")
	token := c["access_token"].(string)
	if c["revocation"] != "on_lease_end" || e.up.Introspect(t, token)["active"] != true {
		t.Fatalf("creds = %v", c)
	}
	// The CLI revokes asynchronously by default: Vault queues the
	// revocation and calls the engine right after.
	e.v.MustCLI(t, "lease", "revoke", c["lease_id"].(string))
	harness.Eventually(t, 10*time.Second, func() bool {
		return e.up.Introspect(t, token)["active"] == false
	}, "token still active after vault lease revoke")

	// A lease left to expire: Vault revokes it, the engine revokes upstream.
	e.v.MustCLI(t, "write", "oauth/roles/short", "grant_type=client_credentials", "provider=local", "ttl=5s")
	issued := time.Now()
	short := e.cliCreds(t, "short")
	if d := short["lease_duration"].(int); d != 5 {
		t.Fatalf("lease_duration = %d", d)
	}
	shortToken := short["access_token"].(string)
	if e.up.Introspect(t, shortToken)["active"] != true {
		t.Fatal("fresh token inactive")
	}
	harness.Eventually(t, 30*time.Second, func() bool {
		return e.up.Introspect(t, shortToken)["active"] == false
	}, "expired lease's token still active upstream")
	lived := time.Since(issued)
	if lived < 4500*time.Millisecond {
		t.Fatalf("token revoked after %s, before its 5s lease ended", lived)
	}
	t.Logf("5s lease: token inactive upstream %s after issue", lived.Round(100*time.Millisecond))
}

func TestDeleteGrantRevokesUpstreamAndRetriesWhenDown(t *testing.T) {
	state := t.TempDir() + "/upstream-state.json"
	e := startEngine(t, harness.UpstreamOptions{StateFile: state})
	rt1, _ := e.importGrant(t, "a", "api:read")
	rt2, grant2 := e.importGrant(t, "b", "api:read")

	e.v.MustCLI(t, "delete", "oauth/grants/a")
	if e.grant(t, "a") != nil {
		t.Fatal("grant a still there after delete")
	}
	if st := e.up.TokenState(t, rt1); st.Active {
		t.Fatalf("deleted grant's refresh token still active upstream: %+v", st)
	}

	e.up.Stop(t)
	out, err := e.v.CLI(t, "delete", "oauth/grants/b")
	if err != nil {
		t.Fatalf("delete with upstream down: %v", err)
	}
	t.Logf("delete with upstream down said: %s", strings.TrimSpace(out))
	if g := e.grant(t, "b"); g == nil || g["status"] != "revoking" {
		t.Fatalf("grant b = %v, want status revoking", g)
	}
	if _, err := e.creds("nope"); err == nil {
		t.Fatal("unknown role issued creds")
	}

	e.up.Restart(t)
	harness.Eventually(t, 30*time.Second, func() bool { return e.grant(t, "b") == nil }, "grant b not erased after upstream came back")
	stats := e.up.Stats(t)
	found := false
	for _, r := range stats.Revocations {
		if r.TokenTypeHint == "refresh_token" && r.GrantID == grant2 {
			found = true
		}
	}
	if !found {
		t.Fatalf("upstream recorded no refresh_token revocation for grant b: %+v", stats.Revocations)
	}
	if st := e.up.TokenState(t, rt2); st.Active {
		t.Fatalf("grant b's refresh token still active: %+v", st)
	}
}

func TestPluginKilledMidRunRecovers(t *testing.T) {
	e := startEngine(t, harness.UpstreamOptions{})
	e.importGrant(t, "g", "api:read")
	e.v.MustCLI(t, "write", "oauth/roles/r", "grant=g")
	e.mustCreds(t, "r")

	pid := e.v.PluginPID(t)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed plugin pid %d", pid)
	var last error
	harness.Eventually(t, 60*time.Second, func() bool {
		_, last = e.creds("r")
		return last == nil
	}, "creds never worked again after the plugin was killed")
	if g := e.grant(t, "g"); g["status"] != "active" || jsonInt(g["rotation_count"]) < 2 {
		t.Fatalf("grant after plugin restart = %v", g)
	}
	if newPID := e.v.PluginPID(t); newPID == pid {
		t.Fatalf("plugin pid unchanged (%d)", pid)
	}
	e.mustCreds(t, "r")
}

// TestSecretHygiene drives every flow that handles a secret with the Vault
// log at trace level and two audit devices, one of them raw, and then looks
// for each real secret value in both.
func TestSecretHygiene(t *testing.T) {
	e := startEngine(t, harness.UpstreamOptions{})
	rawAudit := t.TempDir() + "/audit-raw.log"
	e.v.MustCLI(t, "audit", "enable", "-path=raw", "file", "file_path="+rawAudit, "log_raw=true")
	// Re-write the provider so its client secret passes through both devices.
	e.v.MustCLI(t, "write", "oauth/providers/local", "client_secret="+e.up.ClientSecret)

	rt, upstreamGrant := e.importGrant(t, "imported", "api:read api:write")
	e.v.MustCLI(t, "write", "oauth/roles/reader", "grant=imported", "scopes=api:read")
	for i := 0; i < 3; i++ {
		e.mustCreds(t, "reader")
	}
	e.v.MustCLI(t, "read", "oauth/creds/reader")
	// Every refresh token the grant has had: the imported one and the three
	// the upstream rotated in (which only Vault ever saw).
	var rotated []string
	for _, v := range e.up.Grant(t, upstreamGrant).Raw["refresh_token_values"].([]any) {
		if v.(string) != rt {
			rotated = append(rotated, v.(string))
		}
	}
	if len(rotated) != 4 {
		t.Fatalf("upstream holds %d rotated refresh tokens, want 4", len(rotated))
	}
	e.v.MustCLI(t, "write", "oauth/roles/svc", "grant_type=client_credentials", "provider=local")
	svc := e.mustCreds(t, "svc")
	e.v.MustCLI(t, "lease", "revoke", "-sync", svc.LeaseID)

	// The authorization-code flow with PKCE, driven like a browser would.
	verifier := "verifier-" + harness.RandomHex(t, 24)
	code := authorize(t, e.up, "http://127.0.0.1/callback", verifier, "offline_access api:read")
	e.v.MustCLI(t, "write", "oauth/grants/authorized", "provider=local", "code="+code,
		"redirect_uri=http://127.0.0.1/callback", "code_verifier="+verifier)
	if g := e.grant(t, "authorized"); g["status"] != "active" || !strings.Contains(fmt.Sprint(g["scopes"]), "api:read") {
		t.Fatalf("grant from code exchange = %v", g)
	}
	e.v.MustCLI(t, "write", "oauth/roles/auth", "grant=authorized")
	e.mustCreds(t, "auth")

	// Errors must not carry secrets either: a bad refresh token and a
	// replayed code.
	e.v.MustCLI(t, "write", "oauth/grants/bogus", "provider=local", "refresh_token=bogus-"+harness.RandomHex(t, 16))
	e.v.MustCLI(t, "write", "oauth/roles/bogus", "grant=bogus")
	if _, err := e.creds("bogus"); err == nil || !strings.Contains(err.Error(), "invalid") {
		t.Fatalf("bogus grant: %v", err)
	}
	_, err := e.v.CLI(t, "write", "oauth/grants/replayed", "provider=local", "code="+code,
		"redirect_uri=http://127.0.0.1/callback", "code_verifier="+verifier)
	if err == nil {
		t.Fatal("replayed code accepted")
	}
	e.v.MustCLI(t, "delete", "oauth/grants/imported")

	secrets := map[string]string{
		"imported refresh token": rt,
		"client secret":          e.up.ClientSecret,
		"code verifier":          verifier,
	}
	for i, r := range rotated {
		secrets[fmt.Sprintf("rotated refresh token #%d", i+1)] = r
	}
	harness.AssertNoNamedSecretsInLogs(t, e.v, secrets)
	assertNoSecretsInAuditResponses(t, rawAudit, secrets)
	// Positive control: the raw device does record what the operator typed,
	// so the search above looks at real values in a real log.
	if raw, _ := os.ReadFile(rawAudit); !strings.Contains(string(raw), rt) || !strings.Contains(string(raw), verifier) {
		t.Fatal("raw audit log lacks the request bodies; the search proves nothing")
	}

	// Every response the engine gives about grants and providers.
	for _, path := range []string{"oauth/grants/authorized", "oauth/providers/local", "oauth/grants/bogus"} {
		out := e.v.MustCLI(t, "read", "-format=json", path)
		for label, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s appears in the response of %s", label, path)
			}
		}
	}
}

// assertNoSecretsInAuditResponses reads a raw (log_raw=true) audit log and
// checks every response entry and every request's non-body fields: those
// are what Vault or the engine produced, as opposed to what the operator
// typed into a request body.
func assertNoSecretsInAuditResponses(t *testing.T, path string, secrets map[string]string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	entries := 0
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("audit line: %v", err)
		}
		entries++
		if req, ok := entry["request"].(map[string]any); ok {
			delete(req, "data")
		}
		b, _ := json.Marshal(entry)
		for label, s := range secrets {
			if strings.Contains(string(b), s) {
				t.Errorf("%s appears in a raw audit entry of type %v outside the operator's request body", label, entry["type"])
			}
		}
	}
	if entries < 10 {
		t.Fatalf("raw audit log has only %d entries", entries)
	}
}

// authorize runs the authorization-code flow with PKCE S256 against the
// upstream the way a browser would and returns the code.
func authorize(t *testing.T, up *harness.Upstream, redirectURI, verifier, scope string) string {
	t.Helper()
	authURL := up.Endpoint(t, "authorization_endpoint") + "?" + url.Values{
		"client_id":             {up.ClientID},
		"response_type":         {"code"},
		"redirect_uri":          {redirectURI},
		"scope":                 {scope},
		"state":                 {"st-" + harness.RandomHex(t, 8)},
		"prompt":                {"consent"},
		"code_challenge":        {s256(verifier)},
		"code_challenge_method": {"S256"},
	}.Encode()
	return followAuthorization(t, authURL, redirectURI).Query().Get("code")
}

// followAuthorization acts as the user's browser from an authorization URL:
// it follows redirects with a cookie jar, logs in as alice when the
// upstream asks, and returns the redirect to redirectURI (not followed).
func followAuthorization(t *testing.T, authURL, redirectURI string) *url.URL {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	next, method, form := authURL, http.MethodGet, url.Values(nil)
	for hop := 0; hop < 10; hop++ {
		var resp *http.Response
		var err error
		if method == http.MethodPost {
			resp, err = client.PostForm(next, form)
		} else {
			resp, err = client.Get(next)
		}
		if err != nil {
			t.Fatalf("authorize hop %d: %v", hop, err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil {
			t.Fatalf("authorize hop %d: %s answered %d without a redirect", hop, next, resp.StatusCode)
		}
		if strings.HasPrefix(loc.String(), redirectURI) {
			if e := loc.Query().Get("error"); e != "" {
				t.Fatalf("authorization failed: %s", e)
			}
			return loc
		}
		next, method, form = loc.String(), http.MethodGet, nil
		if strings.Contains(loc.Path, "/interaction/") {
			next, method, form = loc.String()+"/login", http.MethodPost, url.Values{"login": {"alice"}}
		}
	}
	t.Fatal("authorization flow did not reach the redirect URI")
	return nil
}

func TestRunningVersionIsReported(t *testing.T) {
	v := harness.StartVault(t)
	out := v.MustCLI(t, "secrets", "list", "-detailed", "-format=json")
	var mounts map[string]struct {
		Type                 string `json:"type"`
		RunningPluginVersion string `json:"running_plugin_version"`
		RunningSHA256        string `json:"running_sha256"`
	}
	if err := json.Unmarshal([]byte(out), &mounts); err != nil {
		t.Fatal(err)
	}
	m := mounts["oauth/"]
	if m.Type != harness.PluginName || m.RunningPluginVersion != harness.PluginVersion() || m.RunningSHA256 != v.PluginSHA256 {
		t.Fatalf("oauth/ mount = %+v, want version %q sha %s", m, harness.PluginVersion(), v.PluginSHA256)
	}
}

func TestTokenReuseRevokesWithTheLastLease(t *testing.T) {
	e := startEngine(t, harness.UpstreamOptions{})
	e.v.MustCLI(t, "write", "oauth/roles/shared", "grant_type=client_credentials", "provider=local", "token_reuse=true")
	first, second := e.cliCreds(t, "shared"), e.cliCreds(t, "shared")
	token := first["access_token"].(string)
	if second["access_token"] != token || first["lease_id"] == second["lease_id"] {
		t.Fatalf("token_reuse: two leases should share one token: %v / %v", first["lease_id"], second["lease_id"])
	}
	if n := e.up.Stats(t).TokenRequests["client_credentials"]; n != 1 {
		t.Fatalf("upstream issued %d tokens for two reused leases", n)
	}
	e.v.MustCLI(t, "lease", "revoke", "-sync", first["lease_id"].(string))
	if e.up.Introspect(t, token)["active"] != true {
		t.Fatal("shared token revoked while a lease still holds it")
	}
	e.v.MustCLI(t, "lease", "revoke", "-sync", second["lease_id"].(string))
	if e.up.Introspect(t, token)["active"] != false {
		t.Fatal("shared token still active after its last lease ended")
	}
	if third := e.cliCreds(t, "shared"); third["access_token"] == token {
		t.Fatal("a revoked shared token was handed out again")
	}
}

func TestLifecycleKeepAliveAndMaxAge(t *testing.T) {
	e := startEngine(t, harness.UpstreamOptions{})
	aliveRT, _ := e.up.Mint(t, e.up.ClientID, "offline_access api:read", "alive")
	e.v.MustCLI(t, "write", "oauth/grants/alive", "provider=local", "refresh_token="+aliveRT, "keep_alive=2s")
	oldRT, _ := e.importGrant(t, "old", "api:read")
	e.v.MustCLI(t, "write", "oauth/grants/old", "max_age=2s")

	harness.Eventually(t, 30*time.Second, func() bool {
		alive, old := e.grant(t, "alive"), e.grant(t, "old")
		return jsonInt(alive["refresh_count"]) >= 2 && old["status"] == "expired"
	}, "keep_alive did not refresh or max_age did not expire")
	alive := e.grant(t, "alive")
	if alive["status"] != "active" || alive["last_used_at"] != "" || jsonInt(alive["rotation_count"]) != jsonInt(alive["refresh_count"]) {
		t.Fatalf("keep_alive grant = %v", alive)
	}
	harness.Eventually(t, 10*time.Second, func() bool { return !e.up.TokenState(t, oldRT).Active },
		"expired grant's refresh token still active upstream")
	if _, err := e.v.CLI(t, "write", "oauth/roles/old", "grant=old"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.creds("old"); err == nil || !strings.Contains(err.Error(), "re-authorization") {
		t.Fatalf("creds of an expired grant: %v", err)
	}
	status := e.v.MustCLI(t, "read", "-format=json", "oauth/tidy/status")
	if !strings.Contains(status, `"grants_checked"`) {
		t.Fatalf("tidy/status = %s", status)
	}
}

// TestTokenExchangeRole: a token_exchange role trades the grant's token for
// one with the role's scopes and audience (RFC 8693); the lease owns it, so
// lease end revokes it, and the grant lives on.
func TestTokenExchangeRole(t *testing.T) {
	e := startEngine(t, harness.UpstreamOptions{})
	e.importGrant(t, "agent", "api:read api:write")
	// The provider's operator decides which audiences an exchange may ask for.
	e.v.MustCLI(t, "write", "oauth/providers/local", "allowed_audiences=https://api.example.com")
	e.v.MustCLI(t, "write", "oauth/roles/agent-read", "grant_type=token_exchange", "grant=agent",
		"scopes=api:read", "audience=https://api.example.com")

	c := e.cliCreds(t, "agent-read")
	token := c["access_token"].(string)
	if c["revocation"] != "on_lease_end" || c["grant"] != "agent" {
		t.Fatalf("creds = %v", c)
	}
	if info := e.up.Introspect(t, token); info["active"] != true || info["scope"] != "api:read" {
		t.Fatalf("exchanged token introspects as %v", info)
	}
	if n := e.up.Stats(t).TokenRequests["urn:ietf:params:oauth:grant-type:token-exchange"]; n != 1 {
		t.Fatalf("upstream saw %d token exchanges", n)
	}
	e.v.MustCLI(t, "lease", "revoke", "-sync", c["lease_id"].(string))
	if info := e.up.Introspect(t, token); info["active"] != false {
		t.Fatalf("exchanged token active after lease end: %v", info)
	}
	if next := e.cliCreds(t, "agent-read"); !nonEmpty(next["access_token"]) {
		t.Fatal("grant stopped working after a token_exchange lease ended")
	}
	if g := e.grant(t, "agent"); g["status"] != "active" {
		t.Fatalf("grant = %v", g)
	}
}
