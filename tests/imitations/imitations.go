// Package imitations runs wire-faithful imitations of eight real OAuth
// providers' token-related endpoints (GitHub, GitLab, Google, Microsoft Entra
// ID, Slack, Atlassian, Salesforce, Bitbucket Cloud) on loopback, for
// end-to-end tests that run the real Vault and the plugin against them.
//
// Each provider's file starts with the documentation pages its behaviour was
// taken from and, behaviour by behaviour, the documented sentence it follows
// (paraphrased). Behaviour the documentation does not settle is marked
// "assumed" there. facts.go holds the same knowledge as a plain table
// (Facts) for cross-checking the engine's presets.
//
// Every imitation plays a single user who approves whatever is asked
// (Authorize, ApproveDevice), keeps its grants and tokens in memory, and
// records each request it receives (Calls) without secret values.
package imitations

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Names lists the providers Start knows.
var Names = []string{"atlassian", "bitbucket", "github", "gitlab", "google", "microsoft", "salesforce", "slack"}

// Options configure one imitation.
type Options struct {
	// RedirectURI is the client's registered redirect URI (Vault's
	// callback). Empty registers "http://127.0.0.1/callback".
	RedirectURI string
	// Mode picks a provider-specific variant:
	//   github:     "github-app" (default: expiring, rotating user tokens)
	//               or "oauth-app" (classic: no expires_in, no refresh token)
	//   salesforce: "" (refresh returns no new refresh token) or "rotation"
	//               (refresh token rotation enabled on the connected app)
	//   slack:      "" (token rotation enabled) or "no-rotation" (classic
	//               long-lived xoxb token, no refresh token)
	//   atlassian:  "" (form or JSON token requests) or "json-only" (only the
	//               documented JSON bodies are accepted)
	//   others:     no variants.
	Mode string
	// ClientID and ClientSecret of the registered client; random when empty.
	ClientID, ClientSecret string
	// Tenant is Microsoft's tenant path segment used in Endpoints
	// ("common" when empty). The imitation accepts any tenant.
	Tenant string
	// DeviceInterval overrides the documented device-flow polling interval
	// (seconds) the imitation announces and enforces with slow_down; 0 keeps
	// the provider's documented value (5 s for all four device flows).
	DeviceInterval int
	// AccessTokenTTL overrides the provider's access-token lifetime (and the
	// expires_in it announces), to test expiry without waiting hours. 0 keeps
	// the documented value.
	AccessTokenTTL time.Duration
}

// Endpoints are the imitation's URLs. Empty when the provider has none.
type Endpoints struct {
	AuthorizationURL       string
	TokenURL               string
	RevocationURL          string
	DeviceAuthorizationURL string
	IntrospectionURL       string
	// Issuer is set for the OpenID Connect providers only (Google,
	// Microsoft, Salesforce).
	Issuer string
	// Provider-specific extras.
	GrantRevocationURL     string // GitHub: DELETE /applications/{client_id}/grant
	TokenInfoURL           string // GitLab: GET /oauth/token/info (Doorkeeper, not RFC 7662)
	AccessibleResourcesURL string // Atlassian: GET /oauth/token/accessible-resources
}

// Call is one request the imitation received. It holds names, never values
// of secrets.
type Call struct {
	Method, Path string
	// Fields are the names of the form (query and body) or JSON body fields,
	// sorted.
	Fields []string
	// Auth is the client or user authentication the request carried:
	// "basic", "bearer", "post" (client_secret in the body), or "none".
	Auth        string
	Accept      string
	ContentType string
	// Grant is the grant_type field, when there was one.
	Grant string
	// Status is the HTTP status the imitation answered.
	Status int
}

// Server is one running imitation.
type Server struct {
	URL                    string
	Name                   string
	ClientID, ClientSecret string
	RedirectURI            string
	Options                Options

	ts *httptest.Server
	p  provider

	mu        sync.Mutex
	calls     []Call
	grants    []*grant
	tokens    map[string]*token
	codes     map[string]*authCode
	devices   map[string]*deviceFlow // by device_code
	rateLimit int
	consented map[string]bool // scopes set already consented (Google prompt logic)
	now       func() time.Time
}

// provider is what differs between imitations.
type provider interface {
	name() string
	routes(s *Server, mux *http.ServeMux)
	endpoints(s *Server) Endpoints
	// authorize validates an authorization request. It returns the code
	// parameters, or an error: a *redirectError is sent back to the client
	// through the redirect URI, any other error is an error page at the
	// provider (the user never returns to the client).
	authorize(s *Server, path string, q url.Values) (*authCode, error)
	// refreshLifetime is the refresh token lifetime (0: none).
	refreshLifetime(s *Server) time.Duration
	// accessLifetime is how long an access token is accepted (0: forever).
	accessLifetime(s *Server) time.Duration
	// tokenValue makes a token value in the provider's format.
	tokenValue(s *Server, refresh bool) string
}

// grant is one user authorization of the client.
type grant struct {
	id      int
	scopes  []string
	offline bool // refresh tokens are issued
	alive   bool
	created time.Time
	extra   map[string]string
}

// token is an issued access or refresh token.
type token struct {
	g       *grant
	refresh bool
	expires time.Time // zero: no expiry
	dead    bool
	// replacedBy is set on a rotated-away refresh token.
	replacedBy string
}

type authCode struct {
	scopes      []string
	offline     bool
	redirectURI string // as sent in the authorization request ("" if none)
	challenge   string
	method      string
	used        bool
	expires     time.Time
	extra       map[string]string
}

type deviceFlow struct {
	userCode string
	scopes   []string
	offline  bool
	approved bool
	denied   bool
	done     bool
	expires  time.Time
	interval time.Duration
	lastPoll time.Time
}

// redirectError is an authorization error the provider sends back to the
// client's redirect URI.
type redirectError struct {
	code, description string
	to                string // redirect target; "" for the request's redirect URI
}

func (e *redirectError) Error() string { return e.code + ": " + e.description }

// Start runs the imitation of provider name on 127.0.0.1 and stops it at
// t.Cleanup.
func Start(t testing.TB, name string, opts Options) *Server {
	t.Helper()
	s, err := New(name, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// New is Start without a testing.TB; the caller closes the server.
func New(name string, opts Options) (*Server, error) {
	var p provider
	switch name {
	case "github":
		if opts.Mode != "" && opts.Mode != "github-app" && opts.Mode != "oauth-app" {
			return nil, fmt.Errorf("github: unknown mode %q", opts.Mode)
		}
		p = &github{}
	case "gitlab":
		p = &gitlab{}
	case "google":
		p = &google{}
	case "microsoft":
		p = &microsoft{}
	case "slack":
		p = &slack{}
	case "atlassian":
		p = &atlassian{}
	case "salesforce":
		p = &salesforce{}
	case "bitbucket":
		p = &bitbucket{}
	default:
		return nil, fmt.Errorf("no imitation of provider %q (have %s)", name, strings.Join(Names, ", "))
	}
	if opts.RedirectURI == "" {
		opts.RedirectURI = "http://127.0.0.1/callback"
	}
	if opts.ClientID == "" {
		opts.ClientID = defaultClientID(name)
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = randHex(20)
	}
	if opts.Tenant == "" {
		opts.Tenant = "common"
	}
	s := &Server{
		Name: name, ClientID: opts.ClientID, ClientSecret: opts.ClientSecret,
		RedirectURI: opts.RedirectURI, Options: opts, p: p,
		tokens: map[string]*token{}, codes: map[string]*authCode{},
		devices: map[string]*deviceFlow{}, consented: map[string]bool{},
		now: time.Now,
	}
	mux := http.NewServeMux()
	p.routes(s, mux)
	rec := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: 200}
		call := s.describe(r)
		mux.ServeHTTP(sw, r)
		call.Status = sw.status
		s.mu.Lock()
		s.calls = append(s.calls, call)
		s.mu.Unlock()
	})
	s.ts = httptest.NewServer(rec)
	s.URL = s.ts.URL
	return s, nil
}

func defaultClientID(name string) string {
	switch name {
	case "github":
		return "Iv1." + randHex(8)
	case "google":
		return randDigits(12) + "-" + randHex(16) + ".apps.googleusercontent.com"
	case "microsoft":
		return uuid()
	case "slack":
		return randDigits(10) + "." + randDigits(12)
	case "salesforce":
		return "3MVG9" + randAlnum(80)
	case "gitlab":
		return randHex(32)
	}
	return randAlnum(32)
}

// Close stops the server.
func (s *Server) Close() { s.ts.Close() }

// Endpoints returns the imitation's URLs.
func (s *Server) Endpoints() Endpoints { return s.p.endpoints(s) }

// Calls returns each request received so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// RateLimitNext makes the next n token-endpoint requests get the provider's
// rate-limit answer.
func (s *Server) RateLimitNext(n int) {
	s.mu.Lock()
	s.rateLimit = n
	s.mu.Unlock()
}

// RevokeApp plays the user removing the app's authorization in the
// provider's settings: every grant and every token dies.
func (s *Server) RevokeApp() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.grants {
		g.alive = false
	}
	for _, t := range s.tokens {
		t.dead = true
	}
}

// ExpireRefreshTokens makes every refresh token issued so far reach the end
// of its lifetime.
func (s *Server) ExpireRefreshTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	past := s.now().Add(-time.Second)
	for _, t := range s.tokens {
		if t.refresh {
			t.expires = past
		}
	}
}

// ExpireAccessTokens makes every access token issued so far expire.
func (s *Server) ExpireAccessTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	past := s.now().Add(-time.Second)
	for _, t := range s.tokens {
		if !t.refresh {
			t.expires = past
		}
	}
}

// AccessTokenActive reports whether the imitation would accept token as an
// access token now.
func (s *Server) AccessTokenActive(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[tok]
	return t != nil && !t.refresh && s.live(t)
}

// RefreshTokenActive reports whether the imitation would accept token as a
// refresh token now.
func (s *Server) RefreshTokenActive(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[tok]
	return t != nil && t.refresh && s.live(t)
}

// GrantAlive reports whether the authorization behind a refresh (or access)
// token, possibly rotated away since, is still alive.
func (s *Server) GrantAlive(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[tok]
	return t != nil && t.g.alive
}

// Grants counts the live grants (user authorizations) of the client.
func (s *Server) Grants() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.grants {
		if g.alive {
			n++
		}
	}
	return n
}

// Minted is what Mint returns in full.
type Minted struct {
	AccessToken, RefreshToken string
}

// Mint creates a grant as if the user had authorized the client for scopes,
// and returns its refresh token. It fails the test when the provider (or
// mode) issues no refresh tokens; use MintTokens then.
func (s *Server) Mint(t testing.TB, scopes []string) string {
	t.Helper()
	m := s.MintTokens(scopes)
	if m.RefreshToken == "" {
		t.Fatalf("%s (mode %q) issues no refresh tokens", s.Name, s.Options.Mode)
	}
	return m.RefreshToken
}

// MintTokens creates a grant as if the user had authorized the client for
// scopes and returns its tokens (RefreshToken empty when the provider or
// mode issues none).
func (s *Server) MintTokens(scopes []string) Minted {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.newGrant(scopes, s.issuesRefresh())
	return s.issue(g, g.offline)
}

func (s *Server) issuesRefresh() bool {
	switch s.Name {
	case "github":
		return s.Options.Mode != "oauth-app"
	case "slack":
		return s.Options.Mode != "no-rotation"
	}
	return true
}

// Authorize plays the user approving the app: it GETs authURL (as Vault's
// authorize endpoint returned it) and returns the redirect back to the
// client (RedirectURI?code=…&state=… or ?error=…) without following it. It
// fails the test when the provider shows an error page instead.
func (s *Server) Authorize(t testing.TB, authURL string) string {
	t.Helper()
	loc, err := s.TryAuthorize(authURL)
	if err != nil {
		t.Fatalf("%s authorization: %v", s.Name, err)
	}
	return loc
}

// TryAuthorize is Authorize returning the provider's error page as an error.
func (s *Server) TryAuthorize(authURL string) (string, error) {
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(authURL)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
		return "", fmt.Errorf("error page (HTTP %d): %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return resp.Header.Get("Location"), nil
}

// ApproveDevice plays the user entering userCode and approving.
func (s *Server) ApproveDevice(t testing.TB, userCode string) {
	t.Helper()
	if !s.setDevice(userCode, true) {
		t.Fatalf("%s: no pending device authorization with user code %q", s.Name, userCode)
	}
}

// DenyDevice plays the user entering userCode and declining.
func (s *Server) DenyDevice(t testing.TB, userCode string) {
	t.Helper()
	if !s.setDevice(userCode, false) {
		t.Fatalf("%s: no pending device authorization with user code %q", s.Name, userCode)
	}
}

func (s *Server) setDevice(userCode string, approve bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.devices {
		if d.userCode == userCode && !d.done {
			d.approved, d.denied = approve, !approve
			return true
		}
	}
	return false
}

// ---- shared machinery (callers hold s.mu unless said otherwise) ----

func (s *Server) live(t *token) bool {
	if t.dead || !t.g.alive {
		return false
	}
	return t.expires.IsZero() || s.now().Before(t.expires)
}

func (s *Server) newGrant(scopes []string, offline bool) *grant {
	g := &grant{id: len(s.grants) + 1, scopes: slices.Clone(scopes), offline: offline, alive: true, created: s.now(), extra: map[string]string{}}
	s.grants = append(s.grants, g)
	return g
}

// accessTTL is the access token lifetime: the provider's documented one,
// or Options.AccessTokenTTL.
func (s *Server) accessTTL(documented time.Duration) time.Duration {
	if s.Options.AccessTokenTTL > 0 {
		return s.Options.AccessTokenTTL
	}
	return documented
}

// issue mints an access token (and a refresh token when withRefresh).
func (s *Server) issue(g *grant, withRefresh bool) Minted {
	var m Minted
	m.AccessToken = s.newToken(g, false)
	if withRefresh {
		m.RefreshToken = s.newToken(g, true)
	}
	return m
}

func (s *Server) newToken(g *grant, refresh bool) string {
	var v string
	for v == "" || s.tokens[v] != nil {
		v = s.p.tokenValue(s, refresh)
	}
	t := &token{g: g, refresh: refresh}
	if refresh {
		if d := s.p.refreshLifetime(s); d > 0 {
			t.expires = s.now().Add(d)
		}
	} else if d := s.p.accessLifetime(s); d > 0 {
		t.expires = s.now().Add(d)
	}
	s.tokens[v] = t
	return v
}

// refreshLookup finds a usable refresh token; ok false when it is unknown,
// rotated away, revoked, expired, or its grant is dead.
func (s *Server) refreshLookup(v string) (*token, bool) {
	t := s.tokens[v]
	if t == nil || !t.refresh || !s.live(t) {
		return t, false
	}
	return t, true
}

// killAccessTokens kills every access token of g.
func (s *Server) killAccessTokens(g *grant) {
	for _, t := range s.tokens {
		if t.g == g && !t.refresh {
			t.dead = true
		}
	}
}

// killGrant kills g and all its tokens.
func (s *Server) killGrant(g *grant) {
	g.alive = false
	for _, t := range s.tokens {
		if t.g == g {
			t.dead = true
		}
	}
}

// takeRateLimit consumes one rate-limited answer, if any is pending.
func (s *Server) takeRateLimit() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rateLimit > 0 {
		s.rateLimit--
		return true
	}
	return false
}

// newCode stores an authorization code.
func (s *Server) newCode(c *authCode) string {
	v := randAlnum(20)
	c.expires = s.now().Add(10 * time.Minute)
	s.codes[v] = c
	return v
}

// redeemCode checks a code, the redirect URI and the PKCE verifier. On
// failure it returns a reason (never a secret).
// Redirect URI policies at the code exchange.
const (
	redirectRFC    = iota // required iff the authorization request had one (RFC 6749 4.1.3)
	redirectAlways        // always required (Google, Microsoft)
	redirectLax           // may be left out; must match when sent (GitHub, Slack)
)

func (s *Server) redeemCode(v, redirectURI, verifier string, policy int) (*authCode, string) {
	c := s.codes[v]
	switch {
	case c == nil:
		return nil, "unknown code"
	case c.used:
		return nil, "code already used"
	case !s.now().Before(c.expires):
		return nil, "code expired"
	}
	c.used = true // one attempt per code, success or not (RFC 6749 4.1.2)
	want := c.redirectURI
	if want == "" && policy == redirectAlways {
		want = s.RedirectURI
	}
	switch {
	case policy == redirectLax && redirectURI == "":
	case policy == redirectRFC && c.redirectURI == "" && redirectURI == "":
	case redirectURI != want:
		return nil, "redirect_uri does not match the authorization request"
	}
	if c.challenge != "" {
		if verifier == "" {
			return nil, "code_verifier missing"
		}
		want := c.challenge
		got := verifier
		if c.method == "S256" {
			sum := sha256.Sum256([]byte(verifier))
			got = base64.RawURLEncoding.EncodeToString(sum[:])
		}
		if got != want {
			return nil, "code_verifier does not match the code_challenge"
		}
	}
	return c, ""
}

// pkceParams reads code_challenge and its method; allowPlain says whether
// the provider documents "plain".
func pkceParams(q url.Values, allowPlain bool) (challenge, method string, err error) {
	challenge = q.Get("code_challenge")
	method = q.Get("code_challenge_method")
	if challenge == "" {
		return "", "", nil
	}
	if method == "" {
		method = "plain"
	}
	if method != "S256" && !(allowPlain && method == "plain") {
		return "", "", fmt.Errorf("unsupported code_challenge_method %q", method)
	}
	return challenge, method, nil
}

// ---- request parsing ----

// request is a parsed token-style request.
type request struct {
	params     url.Values
	json       bool
	clientID   string
	secret     string
	authMethod string // basic, post, none
	bearer     string
}

// parse reads form (query and body) or JSON parameters and the client
// credentials, from HTTP Basic or the body.
func parse(r *http.Request) (*request, error) {
	req := &request{params: url.Values{}}
	for k, vs := range r.URL.Query() {
		req.params[k] = vs
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	switch {
	case mt == "application/json":
		req.json = true
		var m map[string]any
		if len(strings.TrimSpace(string(body))) > 0 {
			if err := json.Unmarshal(body, &m); err != nil {
				return nil, errors.New("malformed JSON body")
			}
		}
		for k, v := range m {
			switch v := v.(type) {
			case string:
				req.params.Set(k, v)
			case nil:
			default:
				b, _ := json.Marshal(v)
				req.params.Set(k, string(b))
			}
		}
	case len(body) > 0:
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, errors.New("malformed form body")
		}
		for k, vs := range vals {
			req.params[k] = append(req.params[k], vs...)
		}
	}
	auth := r.Header.Get("Authorization")
	switch {
	case strings.HasPrefix(auth, "Basic "):
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(auth, "Basic "))
		if err != nil {
			return nil, errors.New("malformed Basic credentials")
		}
		id, sec, _ := strings.Cut(string(raw), ":")
		// RFC 6749 2.3.1: form-encoded before base64.
		if u, err := url.QueryUnescape(id); err == nil {
			id = u
		}
		if u, err := url.QueryUnescape(sec); err == nil {
			sec = u
		}
		req.clientID, req.secret, req.authMethod = id, sec, "basic"
	case strings.HasPrefix(auth, "Bearer "):
		req.bearer = strings.TrimPrefix(auth, "Bearer ")
	}
	if req.authMethod == "" {
		req.clientID = req.params.Get("client_id")
		req.secret = req.params.Get("client_secret")
		req.authMethod = "none"
		if req.secret != "" {
			req.authMethod = "post"
		}
	}
	return req, nil
}

// describe records a request's shape without secret values. It reads and
// restores the body.
func (s *Server) describe(r *http.Request) Call {
	c := Call{Method: r.Method, Path: r.URL.Path, Accept: r.Header.Get("Accept"), ContentType: r.Header.Get("Content-Type"), Auth: "none"}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	r.Body = io.NopCloser(strings.NewReader(string(body)))
	names := map[string]bool{}
	for k := range r.URL.Query() {
		names[k] = true
	}
	mt, _, _ := mime.ParseMediaType(c.ContentType)
	if mt == "application/json" {
		var m map[string]any
		if json.Unmarshal(body, &m) == nil {
			for k, v := range m {
				names[k] = true
				if k == "grant_type" {
					c.Grant, _ = v.(string)
				}
			}
		}
	} else if vals, err := url.ParseQuery(string(body)); err == nil {
		for k := range vals {
			names[k] = true
		}
		if g := vals.Get("grant_type"); g != "" {
			c.Grant = g
		}
	}
	if c.Grant == "" {
		c.Grant = r.URL.Query().Get("grant_type")
	}
	for k := range names {
		c.Fields = append(c.Fields, k)
	}
	sort.Strings(c.Fields)
	auth := r.Header.Get("Authorization")
	switch {
	case strings.HasPrefix(auth, "Basic "):
		c.Auth = "basic"
	case strings.HasPrefix(auth, "Bearer "):
		c.Auth = "bearer"
	case names["client_secret"]:
		c.Auth = "post"
	}
	return c
}

// ---- responses ----

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// obj is an ordered-enough JSON object.
type obj = map[string]any

func oauthError(code, desc string) obj {
	o := obj{"error": code}
	if desc != "" {
		o["error_description"] = desc
	}
	return o
}

// redirectWith builds base?params, keeping base's own query.
func redirectWith(base string, params url.Values) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	q := u.Query()
	for k, vs := range params {
		for _, v := range vs {
			q.Add(k, v)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// serveAuthorize is the shared authorization endpoint: it validates with
// the provider's rules and redirects back with a code (the user approves).
func (s *Server) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	c, err := s.p.authorize(s, r.URL.Path, q)
	var loc string
	if err == nil {
		code := s.newCode(c)
		params := url.Values{"code": {code}}
		if st := q.Get("state"); st != "" {
			params.Set("state", st)
		}
		target := c.redirectURI
		if target == "" {
			target = s.RedirectURI
		}
		loc = redirectWith(target, params)
	}
	s.mu.Unlock()
	var re *redirectError
	switch {
	case err == nil:
		http.Redirect(w, r, loc, http.StatusFound)
	case errors.As(err, &re):
		target := re.to
		if target == "" {
			target = q.Get("redirect_uri")
		}
		if target == "" {
			target = s.RedirectURI
		}
		params := url.Values{"error": {re.code}}
		if re.description != "" {
			params.Set("error_description", re.description)
		}
		if st := q.Get("state"); st != "" {
			params.Set("state", st)
		}
		http.Redirect(w, r, redirectWith(target, params), http.StatusFound)
	default:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, "<html><body><h1>Error</h1><p>%s</p></body></html>\n", htmlEscape(err.Error()))
	}
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// exactRedirect checks redirect_uri against the registered one, exactly.
func (s *Server) exactRedirect(got string) bool { return got == s.RedirectURI }

// subpathRedirect: same scheme, host and port; path equal to or under the
// registered path (GitHub OAuth apps, Slack, Bitbucket).
func (s *Server) subpathRedirect(got string) bool {
	reg, err1 := url.Parse(s.RedirectURI)
	u, err2 := url.Parse(got)
	if err1 != nil || err2 != nil {
		return false
	}
	if u.Scheme != reg.Scheme || u.Host != reg.Host {
		return false
	}
	rp := strings.TrimSuffix(reg.Path, "/")
	return u.Path == reg.Path || u.Path == rp || strings.HasPrefix(u.Path, rp+"/")
}

// ---- token values ----

func randBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

func randHex(n int) string { return hex.EncodeToString(randBytes(n)) }

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func randFrom(set string, n int) string {
	b := randBytes(n)
	for i := range b {
		b[i] = set[int(b[i])%len(set)]
	}
	return string(b)
}

func randAlnum(n int) string  { return randFrom(alnum, n) }
func randDigits(n int) string { return randFrom("0123456789", n) }
func randB64(n int) string    { return base64.RawURLEncoding.EncodeToString(randBytes(n)) }

func uuid() string {
	h := randHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// fakeJWT builds an unsigned-looking JWT (random signature): the engine
// reads an ID token's sub without checking the signature.
func fakeJWT(claims obj) string {
	h, _ := json.Marshal(obj{"alg": "RS256", "typ": "JWT", "kid": "imitation"})
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "." + randB64(64)
}

func scopeList(s string) []string { return strings.Fields(s) }

func hasScope(scopes []string, s string) bool { return slices.Contains(scopes, s) }
