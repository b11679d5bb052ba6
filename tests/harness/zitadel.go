package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The second real authorization server: the example OpenID Provider of
// github.com/zitadel/oidc/v3 (scripts/zitadel-op), built by
// scripts/build-zitadel-op.sh on first use unless ZITADEL_OP_BIN names a
// binary.

const (
	// ZitadelOIDCVersion is the github.com/zitadel/oidc/v3 release the OP is
	// built from.
	ZitadelOIDCVersion = "v3.52.0"
	// ZitadelClientID is the confidential client the OP registers for Vault
	// (client_secret_basic).
	ZitadelClientID = "vault"
	// ZitadelAPIClientID is the OP's second client, a resource server: the
	// example OP only answers introspection of a token whose audience holds
	// the calling client, so introspecting as this client shows whether a
	// token was issued for audience "api".
	ZitadelAPIClientID = "api"
	// ZitadelPassword is the password of the example's test users.
	ZitadelPassword = "verysecure"
)

// ZitadelOptions configure StartZitadelOP. Zero values mean defaults.
type ZitadelOptions struct {
	// RedirectURIs of the Vault client (e.g. Vault's callback URL). Required.
	RedirectURIs []string
	// ClientSecret of the Vault client. Default: 32 random hex chars, so
	// tests can grep logs for it.
	ClientSecret string
	// Port to listen on (0: a free port).
	Port int
}

// ZitadelOP is a running zitadel example OP.
type ZitadelOP struct {
	URL             string // issuer, http://127.0.0.1:PORT/ (with the trailing slash)
	ClientID        string // ZitadelClientID
	ClientSecret    string
	APIClientID     string // ZitadelAPIClientID
	APIClientSecret string
	// Username and Password of the example's admin test user, the one the
	// browser and device helpers log in as (the example names it
	// test-user@<issuer host>).
	Username, Password string
	Port               int
	LogPath            string
	// Discovery is the parsed /.well-known/openid-configuration.
	Discovery map[string]any

	opts ZitadelOptions
	proc *process
	http *http.Client
}

var (
	zitadelBinOnce sync.Once
	zitadelBin     string
	zitadelBinErr  error
)

// findZitadelOP returns $ZITADEL_OP_BIN, or builds (or reuses) the cached
// binary with scripts/build-zitadel-op.sh, once per process.
func findZitadelOP() (string, error) {
	zitadelBinOnce.Do(func() {
		if p := os.Getenv("ZITADEL_OP_BIN"); p != "" {
			zitadelBin, zitadelBinErr = filepath.Abs(p)
			return
		}
		cmd := exec.Command("bash", filepath.Join(st.repoRoot, "scripts", "build-zitadel-op.sh"))
		cmd.Dir = st.repoRoot
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			zitadelBinErr = fmt.Errorf("scripts/build-zitadel-op.sh: %v\n%s", err, stderr.String())
			return
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		zitadelBin = strings.TrimSpace(lines[len(lines)-1])
	})
	return zitadelBin, zitadelBinErr
}

// StartZitadelOP builds the OP if needed, starts it on a loopback port and
// waits for its discovery document. It is stopped at t's cleanup.
func StartZitadelOP(t testing.TB, opts ZitadelOptions) *ZitadelOP {
	t.Helper()
	ensureSetup(t)
	if len(opts.RedirectURIs) == 0 {
		t.Fatal("StartZitadelOP: RedirectURIs is required")
	}
	bin, err := findZitadelOP()
	if err != nil {
		t.Fatalf("StartZitadelOP: %v", err)
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = RandomHex(t, 16)
	}
	autoPort := opts.Port == 0
	if autoPort {
		opts.Port = FreePort(t)
	}
	z := &ZitadelOP{
		ClientID:        ZitadelClientID,
		ClientSecret:    opts.ClientSecret,
		APIClientID:     ZitadelAPIClientID,
		APIClientSecret: RandomHex(t, 16),
		Password:        ZitadelPassword,
		LogPath:         filepath.Join(t.TempDir(), "zitadel-op.log"),
		opts:            opts,
		http:            &http.Client{Timeout: 30 * time.Second},
	}
	z.setPort(opts.Port)
	t.Cleanup(func() { z.proc.stop(10 * time.Second) })
	dumpLogOnFailure(t, "zitadel OP log", z.LogPath, nil)
	// A port picked by FreePort can be taken before the OP binds it.
	for attempt := 1; ; attempt++ {
		err := z.tryStart(bin)
		if err == nil {
			return z
		}
		if !autoPort || attempt == 3 {
			t.Fatalf("StartZitadelOP: %v; see the zitadel OP log below", err)
		}
		t.Logf("StartZitadelOP: %v; retrying on another port", err)
		z.proc.stop(5 * time.Second)
		z.setPort(FreePort(t))
	}
}

func (z *ZitadelOP) setPort(port int) {
	z.Port = port
	z.URL = fmt.Sprintf("http://127.0.0.1:%d/", port)
	// The example's user store names its admin after the issuer's host.
	z.Username = "test-user@127.0.0.1"
}

func (z *ZitadelOP) tryStart(bin string) error {
	env := cleanEnv("ZITADEL_OP_PORT", "ZITADEL_OP_REDIRECT_URIS", "ZITADEL_OP_CLIENT_ID", "ZITADEL_OP_API_CLIENT_ID",
		"ZITADEL_OP_CLIENT_SECRET", "ZITADEL_OP_API_CLIENT_SECRET", "ZITADEL_OP_TEST_ENDPOINTS")
	env = append(env,
		"ZITADEL_OP_CLIENT_SECRET="+z.ClientSecret,
		"ZITADEL_OP_API_CLIENT_SECRET="+z.APIClientSecret,
	)
	p, err := startProcess("zitadel-op", z.LogPath, env, bin,
		"-port="+strconv.Itoa(z.Port),
		"-redirect-uris="+strings.Join(z.opts.RedirectURIs, ","),
		"-client-id="+z.ClientID,
		"-api-client-id="+z.APIClientID,
		"-test-endpoints")
	if err != nil {
		return err
	}
	z.proc = p
	doc, err := awaitDiscovery(z.http, p, z.URL+".well-known/openid-configuration")
	z.Discovery = doc
	return err
}

// PID is the OP's process id.
func (z *ZitadelOP) PID() int { return z.proc.cmd.Process.Pid }

// Endpoint returns a URL from the discovery document; it fails t if there
// is none.
func (z *ZitadelOP) Endpoint(t testing.TB, key string) string {
	t.Helper()
	s, _ := z.Discovery[key].(string)
	if s == "" {
		t.Fatalf("zitadel OP discovery document has no %q", key)
	}
	return s
}

var (
	zitadelLoginID = regexp.MustCompile(`<input type="hidden" name="id" value="([^"]*)">`)
	zitadelFormErr = regexp.MustCompile(`<p style="color:red[^"]*">([^<]*)</p>`)
)

// browser is a cookie-keeping client that does not follow redirects.
func browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

// Authorize plays the user's browser from an authorization URL (as
// grants/NAME/authorize returns it): it follows the OP's redirects to its
// login page, logs in as Username/Password, and returns the OP's final
// redirect to redirectURI without following it. The example OP has no
// consent step: a successful login goes straight back to the client.
func (z *ZitadelOP) Authorize(t testing.TB, authURL, redirectURI string) *url.URL {
	t.Helper()
	client := browser()
	req, _ := http.NewRequest(http.MethodGet, authURL, nil)
	loggedIn := false
	for hop := 0; hop < 10; hop++ {
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("zitadel authorize hop %d (%s %s): %v", hop, req.Method, req.URL, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if loc, err := resp.Location(); err == nil {
			if strings.HasPrefix(loc.String(), redirectURI) {
				return loc
			}
			req, _ = http.NewRequest(http.MethodGet, loc.String(), nil)
			continue
		}
		// Not a redirect: it must be the login page (example/server/exampleop/login.go).
		m := zitadelLoginID.FindSubmatch(body)
		if resp.StatusCode != http.StatusOK || m == nil {
			t.Fatalf("zitadel authorize hop %d: %s %s answered HTTP %d without a redirect or login form: %s",
				hop, req.Method, req.URL, resp.StatusCode, truncate(body))
		}
		if loggedIn {
			msg := ""
			if e := zitadelFormErr.FindSubmatch(body); e != nil {
				msg = html.UnescapeString(string(e[1]))
			}
			t.Fatalf("zitadel login as %s refused: %q", z.Username, msg)
		}
		loggedIn = true
		form := url.Values{"id": {html.UnescapeString(string(m[1]))}, "username": {z.Username}, "password": {z.Password}}
		action := req.URL.ResolveReference(&url.URL{Path: "/login/username"})
		req, _ = http.NewRequest(http.MethodPost, action.String(), strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	t.Fatal("zitadel authorization did not reach the redirect URI within 10 hops")
	return nil
}

// ApproveDevice is the user on another device (RFC 8628) at the example's
// device UI (example/server/exampleop/device.go): enter userCode, log in as
// Username/Password, allow.
func (z *ZitadelOP) ApproveDevice(t testing.TB, verificationURI, userCode string) {
	t.Helper()
	client := browser()
	base, err := url.Parse(verificationURI)
	if err != nil {
		t.Fatalf("verification_uri %q: %v", verificationURI, err)
	}
	// The code page posts user_code back to itself, which renders the login form.
	resp, err := client.PostForm(base.String(), url.Values{"user_code": {userCode}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte(`action="/device/login"`)) {
		t.Fatalf("device code page: HTTP %d %s", resp.StatusCode, truncate(body))
	}
	login := base.ResolveReference(&url.URL{Path: "/device/login"})
	resp, err = client.PostForm(login.String(), url.Values{"user_code": {userCode}, "username": {z.Username}, "password": {z.Password}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("./confirm?action=allowed")) {
		loc, _ := resp.Location()
		t.Fatalf("device login: HTTP %d, location %v: %s", resp.StatusCode, loc, truncate(body))
	}
	confirm := base.ResolveReference(&url.URL{Path: "/device/confirm", RawQuery: "action=allowed"})
	resp, err = client.Get(confirm.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("Device authorization allowed")) {
		t.Fatalf("device confirm: HTTP %d %s", resp.StatusCode, truncate(body))
	}
}

// Introspect is a real RFC 7662 introspection of token as the Vault client.
func (z *ZitadelOP) Introspect(t testing.TB, token string) map[string]any {
	t.Helper()
	return z.IntrospectAs(t, z.ClientID, z.ClientSecret, token)
}

// IntrospectAs is Introspect authenticating as another client (e.g. the
// resource server APIClientID).
func (z *ZitadelOP) IntrospectAs(t testing.TB, clientID, clientSecret, token string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, z.Endpoint(t, "introspection_endpoint"), strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(clientSecret))
	status, out := z.doJSON(t, req)
	if status != http.StatusOK {
		t.Fatalf("zitadel introspection as %s: HTTP %d %v", clientID, status, out)
	}
	return out
}

// Userinfo calls the userinfo endpoint with token and returns the status and
// the decoded body (nil when it is not JSON).
func (z *ZitadelOP) Userinfo(t testing.TB, token string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, z.Endpoint(t, "userinfo_endpoint"), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return z.doJSON(t, req)
}

// TokenRequest posts form to the token endpoint as the Vault client and
// returns the status and decoded body.
func (z *ZitadelOP) TokenRequest(t testing.TB, form url.Values) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, z.Endpoint(t, "token_endpoint"), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(z.ClientID), url.QueryEscape(z.ClientSecret))
	return z.doJSON(t, req)
}

// ZitadelRefreshToken is one refresh token the OP issued (GET
// /test/refresh-tokens, a test-only endpoint of scripts/zitadel-op).
type ZitadelRefreshToken struct {
	Token string `json:"token"`
	// Source is the grant that issued it: authorization_code,
	// refresh_token (a rotation; Replaces is the token it replaced),
	// token_exchange or device_code.
	Source   string    `json:"source"`
	Subject  string    `json:"subject"`
	ClientID string    `json:"client_id"`
	Replaces string    `json:"replaces"`
	Scopes   []string  `json:"scopes"`
	IssuedAt time.Time `json:"issued_at"`
	// Live: the OP still accepts it for a refresh.
	Live bool `json:"live"`
}

// RefreshTokens returns every refresh token the OP issued, oldest first.
func (z *ZitadelOP) RefreshTokens(t testing.TB) []ZitadelRefreshToken {
	t.Helper()
	resp, err := z.http.Get(z.URL + "test/refresh-tokens")
	if err != nil {
		t.Fatalf("zitadel /test/refresh-tokens: %v", err)
	}
	defer resp.Body.Close()
	var out []ZitadelRefreshToken
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("zitadel /test/refresh-tokens: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("zitadel /test/refresh-tokens: %v", err)
	}
	return out
}

func (z *ZitadelOP) doJSON(t testing.TB, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := z.http.Do(req)
	if err != nil {
		t.Fatalf("zitadel %s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if json.Unmarshal(body, &out) != nil {
		out = nil
	}
	return resp.StatusCode, out
}

func truncate(b []byte) string {
	const max = 400
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
