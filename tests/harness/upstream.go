package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The upstream OAuth server (tests/upstream/server.js, node-oidc-provider).

// UpstreamOptions configure StartUpstream. Zero values mean defaults.
type UpstreamOptions struct {
	// AccessTokenTTL of issued access tokens (0: the server's default).
	AccessTokenTTL time.Duration
	// ClientSecret of the confidential clients. Default: 32 random hex chars,
	// so tests can grep logs for it.
	ClientSecret string
	// Port to listen on (0: a free port).
	Port int
	// StateFile: when set, the server loads it at start and saves its state
	// (grants, tokens) there on SIGTERM, so Restart keeps issued tokens valid.
	StateFile string
	// RedirectURIs of the clients (authorization code flow), in addition to
	// the server's built-in http://127.0.0.1/callback.
	RedirectURIs []string
	// RefreshTokenTTL of refresh tokens (0: the server's default, 14 days).
	RefreshTokenTTL time.Duration
	// ClientCredentialsTTL of client_credentials access tokens (0: default 300s).
	ClientCredentialsTTL time.Duration
	// DevicePollInterval returned by the device authorization endpoint (0: 1s).
	DevicePollInterval time.Duration
	// RotationGrace is the refresh-token rotation grace period (ROTATION_GRACE,
	// whole seconds, rounded up): for this long after a refresh token's first
	// rotation the token endpoint still accepts it and rotates it again, as
	// Okta, Auth0, Keycloak and Ory Hydra can be configured to; after it,
	// reuse detection kills the grant as usual. 0 (the default): no grace,
	// a rotated refresh token presented again kills the grant at once.
	RotationGrace time.Duration
	// Env: extra environment variables ("KEY=value") for the server.
	Env []string
}

// Upstream is a running tests/upstream/server.js.
type Upstream struct {
	URL          string // issuer, e.g. http://127.0.0.1:40123
	ClientSecret string
	ClientID     string // "vault-basic"
	Port         int
	StateFile    string
	LogPath      string
	// Discovery is the parsed /.well-known/openid-configuration.
	Discovery map[string]any

	opts UpstreamOptions
	proc *process
	http *http.Client
}

// UpstreamStats is GET /test/stats.
type UpstreamStats struct {
	TokenRequests    map[string]int `json:"token_requests"`
	TokenErrors      map[string]int `json:"token_errors"`
	RefreshesByGrant map[string]int `json:"refreshes_by_grant"`
	RotationsByGrant map[string]int `json:"rotations_by_grant"`
	// GraceReusesByGrant counts the successful refreshes that presented an
	// already rotated refresh token within the RotationGrace window.
	GraceReusesByGrant map[string]int       `json:"grace_reuses_by_grant"`
	Revocations        []UpstreamRevocation `json:"revocations"`
	Introspections     int                  `json:"introspections"`
	// Raw is the whole document, for fields not modelled above.
	Raw map[string]any `json:"-"`
}

// UpstreamRevocation is one entry of UpstreamStats.Revocations (one call of
// the revocation endpoint, successful or not).
type UpstreamRevocation struct {
	TokenTypeHint string `json:"token_type_hint"` // "" when none was sent
	Kind          string `json:"kind"`            // AccessToken, RefreshToken, ClientCredentials or "unknown"
	GrantID       string `json:"grant_id"`
	ClientID      string `json:"client_id"`
	Status        int    `json:"status"` // HTTP status the endpoint answered
	At            int64  `json:"at"`     // unix milliseconds
}

// TokenState is GET /test/token?value=...: what the server knows about a token.
type TokenState struct {
	Found      bool   `json:"found"`
	Kind       string `json:"kind"` // AccessToken, RefreshToken, ClientCredentials, ...
	Active     bool   `json:"active"`
	GrantID    string `json:"grant_id"`
	GrantFound bool   `json:"grant_found"`
	Scope      string `json:"scope"`
	Consumed   bool   `json:"consumed"` // a rotated (used) refresh token
	// GraceUntil (unix milliseconds) is, with RotationGrace, when a consumed
	// refresh token stops being accepted; 0 otherwise.
	GraceUntil int64  `json:"grace_until"`
	ClientID   string `json:"client_id"`
	AccountID  string `json:"account_id"`
	Exp        int64  `json:"exp"` // unix seconds
	// Raw is the whole document.
	Raw map[string]any `json:"-"`
}

// GrantState is GET /test/grant?id=...
type GrantState struct {
	Found        bool           `json:"found"`
	ClientID     string         `json:"client_id"`
	AccountID    string         `json:"account_id"`
	Scope        string         `json:"scope"`
	Tokens       map[string]int `json:"tokens"`        // by model, including consumed/expired ones still stored
	ActiveTokens map[string]int `json:"active_tokens"` // by model
	Raw          map[string]any `json:"-"`
}

// MintRequest is the body of POST /test/mint. Empty fields take the server's
// defaults (vault-basic, "offline_access api:read api:write", alice).
type MintRequest struct {
	ClientID        string `json:"client_id,omitempty"`
	Scope           string `json:"scope,omitempty"`
	AccountID       string `json:"account_id,omitempty"`
	RefreshTokenTTL int    `json:"refresh_token_ttl,omitempty"` // seconds
}

// StartUpstream starts the upstream OAuth server and waits until its
// discovery document answers. It is stopped at test cleanup. It runs Setup
// if that has not been done, failing t if Setup fails.
func StartUpstream(t testing.TB, opts UpstreamOptions) *Upstream {
	t.Helper()
	ensureSetup(t)
	if opts.ClientSecret == "" {
		opts.ClientSecret = RandomHex(t, 16)
	}
	autoPort := opts.Port == 0
	if autoPort {
		opts.Port = FreePort(t)
	}
	u := &Upstream{
		URL:          fmt.Sprintf("http://127.0.0.1:%d", opts.Port),
		ClientSecret: opts.ClientSecret,
		ClientID:     DefaultClientID,
		Port:         opts.Port,
		StateFile:    opts.StateFile,
		LogPath:      filepath.Join(t.TempDir(), "upstream.log"),
		opts:         opts,
		http:         &http.Client{Timeout: 30 * time.Second},
	}
	t.Cleanup(func() { u.proc.stop(10 * time.Second) })
	dumpLogOnFailure(t, "upstream log", u.LogPath, nil)
	// A port picked by FreePort can be taken by someone else before the
	// server binds it; then start again on another one.
	for attempt := 1; ; attempt++ {
		err := u.tryStart()
		if err == nil {
			return u
		}
		if !autoPort || attempt == 3 {
			t.Fatalf("StartUpstream: %v; see the upstream log below", err)
		}
		t.Logf("StartUpstream: %v; retrying on another port", err)
		u.proc.stop(5 * time.Second)
		u.Port = FreePort(t)
		u.URL = fmt.Sprintf("http://127.0.0.1:%d", u.Port)
	}
}

func (u *Upstream) env() []string {
	env := cleanEnv("PORT", "HOST", "ISSUER", "CLIENT_SECRET", "REDIRECT_URIS", "STATE_FILE",
		"ACCESS_TOKEN_TTL", "REFRESH_TOKEN_TTL", "CLIENT_CREDENTIALS_TTL", "DEVICE_POLL_INTERVAL", "ROTATION_GRACE")
	env = append(env,
		"PORT="+strconv.Itoa(u.Port),
		"HOST=127.0.0.1",
		"ISSUER="+u.URL,
		"CLIENT_SECRET="+u.ClientSecret,
	)
	if len(u.opts.RedirectURIs) > 0 {
		env = append(env, "REDIRECT_URIS="+strings.Join(u.opts.RedirectURIs, ","))
	}
	if u.StateFile != "" {
		env = append(env, "STATE_FILE="+u.StateFile)
	}
	for name, d := range map[string]time.Duration{
		"ACCESS_TOKEN_TTL":       u.opts.AccessTokenTTL,
		"REFRESH_TOKEN_TTL":      u.opts.RefreshTokenTTL,
		"CLIENT_CREDENTIALS_TTL": u.opts.ClientCredentialsTTL,
		"DEVICE_POLL_INTERVAL":   u.opts.DevicePollInterval,
		"ROTATION_GRACE":         u.opts.RotationGrace,
	} {
		if d > 0 {
			// The server takes whole seconds (>= 1).
			env = append(env, name+"="+strconv.Itoa(max(1, int((d+time.Second-1)/time.Second))))
		}
	}
	return append(env, u.opts.Env...)
}

func (u *Upstream) start(t testing.TB) {
	t.Helper()
	if err := u.tryStart(); err != nil {
		t.Fatalf("StartUpstream: %v; see the upstream log below", err)
	}
}

// tryStart starts the server and waits up to 30s for its discovery
// document.
func (u *Upstream) tryStart() error {
	p, err := startProcess("upstream", u.LogPath, u.env(), st.nodeBin, st.upstreamScript)
	if err != nil {
		return err
	}
	u.proc = p
	doc, err := awaitDiscovery(u.http, p, u.URL+"/.well-known/openid-configuration")
	u.Discovery = doc
	return err
}

// PID is the upstream server's process id (it changes with Restart).
func (u *Upstream) PID() int { return u.proc.cmd.Process.Pid }

// Stop stops the server with SIGTERM and waits for it (it saves StateFile
// on the way out when one is set).
func (u *Upstream) Stop(t testing.TB) {
	t.Helper()
	u.proc.stop(10 * time.Second)
}

// Restart stops the server if it is running and starts it again on the same
// port with the same options and state file.
func (u *Upstream) Restart(t testing.TB) {
	t.Helper()
	u.proc.stop(10 * time.Second)
	u.start(t)
}

// Endpoint returns a URL from the discovery document, e.g.
// Endpoint(t, "authorization_endpoint"); it fails t if there is none.
func (u *Upstream) Endpoint(t testing.TB, key string) string {
	t.Helper()
	s, _ := u.Discovery[key].(string)
	if s == "" {
		t.Fatalf("upstream discovery document has no %q", key)
	}
	return s
}

func (u *Upstream) doJSON(t testing.TB, req *http.Request, wantStatus int, out any) {
	t.Helper()
	resp, err := u.http.Do(req)
	if err != nil {
		t.Fatalf("upstream %s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("upstream %s %s: status %s, body %s", req.Method, req.URL.Path, resp.Status, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("upstream %s %s: decoding %s: %v", req.Method, req.URL.Path, body, err)
		}
	}
}

// Mint asks the test backdoor (POST /test/mint) for a refresh token of a new
// grant for account, client clientID and scope (space separated). It
// returns the refresh token and the grant id.
func (u *Upstream) Mint(t testing.TB, clientID, scope, account string) (refreshToken, grantID string) {
	t.Helper()
	return u.MintWith(t, MintRequest{ClientID: clientID, Scope: scope, AccountID: account})
}

// MintWith is Mint with every option of POST /test/mint.
func (u *Upstream) MintWith(t testing.TB, r MintRequest) (refreshToken, grantID string) {
	t.Helper()
	body, _ := json.Marshal(r)
	req, _ := http.NewRequest(http.MethodPost, u.URL+"/test/mint", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	var out struct {
		RefreshToken string `json:"refresh_token"`
		GrantID      string `json:"grant_id"`
	}
	u.doJSON(t, req, http.StatusOK, &out)
	if out.RefreshToken == "" {
		t.Fatalf("upstream /test/mint returned no refresh_token")
	}
	return out.RefreshToken, out.GrantID
}

// Stats returns GET /test/stats.
func (u *Upstream) Stats(t testing.TB) UpstreamStats {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u.URL+"/test/stats", nil)
	var raw json.RawMessage
	u.doJSON(t, req, http.StatusOK, &raw)
	var s UpstreamStats
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("upstream /test/stats: %v", err)
	}
	_ = json.Unmarshal(raw, &s.Raw)
	return s
}

// TokenState returns GET /test/token?value=VALUE.
func (u *Upstream) TokenState(t testing.TB, value string) TokenState {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u.URL+"/test/token?value="+url.QueryEscape(value), nil)
	var raw json.RawMessage
	u.doJSON(t, req, http.StatusOK, &raw)
	var s TokenState
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("upstream /test/token: %v", err)
	}
	_ = json.Unmarshal(raw, &s.Raw)
	return s
}

// Grant returns GET /test/grant?id=GRANTID.
func (u *Upstream) Grant(t testing.TB, grantID string) GrantState {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u.URL+"/test/grant?id="+url.QueryEscape(grantID), nil)
	var raw json.RawMessage
	u.doJSON(t, req, http.StatusOK, &raw)
	var g GrantState
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatalf("upstream /test/grant: %v", err)
	}
	_ = json.Unmarshal(raw, &g.Raw)
	return g
}

// ResetStats zeroes the server's statistics (POST /test/reset-stats).
func (u *Upstream) ResetStats(t testing.TB) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u.URL+"/test/reset-stats", nil)
	u.doJSON(t, req, http.StatusOK, nil)
}

// Introspect performs a real RFC 7662 introspection of token at the
// provider's introspection_endpoint, authenticating as vault-basic.
func (u *Upstream) Introspect(t testing.TB, token string) map[string]any {
	t.Helper()
	form := url.Values{"token": {token}}
	req, _ := http.NewRequest(http.MethodPost, u.Endpoint(t, "introspection_endpoint"), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(u.ClientID), url.QueryEscape(u.ClientSecret))
	var out map[string]any
	u.doJSON(t, req, http.StatusOK, &out)
	return out
}

// ApproveDevice is the user on another device (RFC 8628): open the
// verification page, enter userCode, confirm, log in as account.
func ApproveDevice(t testing.TB, verificationURI, userCode, account string) {
	t.Helper()
	xsrfField := regexp.MustCompile(`name="xsrf" value="([^"]+)"`)
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	resp, err := client.Get(verificationURI)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := xsrfField.FindSubmatch(page)
	if m == nil {
		t.Fatalf("no xsrf field on the device page: %s", page)
	}
	resp, err = client.PostForm(verificationURI, url.Values{"xsrf": {string(m[1])}, "user_code": {userCode}, "confirm": {"yes"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || !strings.Contains(loc.Path, "/interaction/") {
		t.Fatalf("device confirm: HTTP %d, location %v", resp.StatusCode, loc)
	}
	resp, err = client.PostForm(loc.String()+"/login", url.Values{"login": {account}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	done, err := resp.Location()
	if err != nil {
		t.Fatalf("device login: HTTP %d", resp.StatusCode)
	}
	resp, err = client.Get(done.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "device-success") {
		t.Fatalf("device approval did not succeed: HTTP %d %s", resp.StatusCode, body)
	}
}
