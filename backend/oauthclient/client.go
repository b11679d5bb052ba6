package oauthclient

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// AuthMethod is how the client authenticates at the token, revocation and
// introspection endpoints (RFC 6749 §2.3, RFC 7523, OIDC Core §9).
type AuthMethod string

const (
	ClientSecretBasic AuthMethod = "client_secret_basic"
	ClientSecretPost  AuthMethod = "client_secret_post"
	PrivateKeyJWT     AuthMethod = "private_key_jwt"
	AuthNone          AuthMethod = "none"
)

// Endpoints are an authorization server's URLs. Only Token is always needed.
type Endpoints struct {
	Issuer              string
	Authorization       string
	Token               string
	Revocation          string
	Introspection       string
	DeviceAuthorization string
}

// Config is one client registration at one authorization server.
type Config struct {
	Endpoints  Endpoints
	ClientID   string
	AuthMethod AuthMethod
	// ClientSecret is used by client_secret_basic and client_secret_post.
	ClientSecret string
	// PrivateKey and KeyID are used by private_key_jwt.
	PrivateKey crypto.Signer
	KeyID      string
	// TokenParams are extra form parameters sent on every token request.
	TokenParams url.Values
	// HTTPClient must not follow redirects; see NewHTTPClient.
	HTTPClient *http.Client
	// Revocation is how the server revokes tokens; "" is RFC 7009.
	Revocation RevocationStyle
	// DefaultLifetime is the lifetime of an access token whose response
	// has no expires_in (Salesforce, classic GitHub tokens); 0 leaves its
	// Expiry zero.
	DefaultLifetime time.Duration
	// InvalidGrantCodes are the server's own error codes that mean what
	// invalid_grant means (GitHub's bad_refresh_verification_code, Slack's
	// invalid_refresh_token): Error.Code becomes invalid_grant and
	// Error.ProviderCode keeps the original.
	InvalidGrantCodes []string
	// ResponseFields are token response fields kept in Token.Fields, by
	// name or dotted path into a JSON object ("team.id").
	ResponseFields []string
	// ScopeDelimiter joins scopes in requests: " " (RFC 6749, the
	// default) or "," (Slack).
	ScopeDelimiter string
	// JSONRequests sends token requests as a JSON object instead of a
	// form (Atlassian documents only JSON).
	JSONRequests bool
	// Observe, when set, is told how long each call to an endpoint
	// ("token", "revocation", "introspection", "device_authorization")
	// took, whatever its outcome.
	Observe func(endpoint string, took time.Duration)
}

// joinScopes writes scopes as the server expects them.
func (c *Client) joinScopes(scopes []string) string {
	if c.cfg.ScopeDelimiter == "," {
		return strings.Join(scopes, ",")
	}
	return strings.Join(scopes, " ")
}

// splitScopes reads a scope string: RFC 6749 separates with spaces,
// GitHub and Slack with commas. No real scope name has either.
func splitScopes(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
}

// Client talks to one authorization server as one client. It is safe for
// concurrent use and holds no per-request state.
type Client struct {
	cfg Config
}

// New checks cfg and returns a client.
func New(cfg Config) (*Client, error) {
	if cfg.ClientID == "" {
		return nil, errors.New("client_id is required")
	}
	switch cfg.Revocation {
	case "", RevokeRFC7009, RevokeGitHub, RevokeSlack, RevokeNone:
	default:
		return nil, fmt.Errorf("unknown revocation style %q", cfg.Revocation)
	}
	switch cfg.AuthMethod {
	case ClientSecretBasic, ClientSecretPost:
		if cfg.ClientSecret == "" {
			return nil, fmt.Errorf("%s needs a client secret", cfg.AuthMethod)
		}
	case PrivateKeyJWT:
		if cfg.PrivateKey == nil {
			return nil, errors.New("private_key_jwt needs a private key")
		}
	case AuthNone:
	default:
		return nil, fmt.Errorf("unknown client authentication method %q", cfg.AuthMethod)
	}
	if cfg.HTTPClient == nil {
		return nil, errors.New("an HTTP client is required")
	}
	return &Client{cfg: cfg}, nil
}

// Endpoints returns the server's endpoints as configured.
func (c *Client) Endpoints() Endpoints { return c.cfg.Endpoints }

// Token is a successful token endpoint response (RFC 6749 §5.1).
type Token struct {
	AccessToken  string
	TokenType    string
	RefreshToken string
	// Scopes is the response's scope; ScopeReturned says whether it had one.
	Scopes        []string
	ScopeReturned bool
	// Expiry is zero when the server did not say (no expires_in).
	Expiry          time.Time
	IssuedTokenType string
	// lifetime is the response's expires_in, clamped; refreshLifetime its
	// refresh_token_expires_in.
	lifetime, refreshLifetime time.Duration
	// Subject is the sub claim of the response's OpenID Connect ID token,
	// when it has one. The ID token itself is not kept.
	Subject string
	// RefreshExpiry is when the refresh token dies (GitHub's and Slack's
	// refresh_token_expires_in); zero when the server did not say.
	RefreshExpiry time.Time
	// Fields are the response's values of Config.ResponseFields that are
	// plain strings, numbers or booleans.
	Fields map[string]string
}

// TokenOptions are the optional parameters of a token request.
type TokenOptions struct {
	Scopes   []string
	Audience []string // RFC 8693
	Resource []string // RFC 8707
}

func (c *Client) apply(o TokenOptions, form url.Values) {
	if len(o.Scopes) > 0 {
		form.Set("scope", c.joinScopes(o.Scopes))
	}
	for _, a := range o.Audience {
		form.Add("audience", a)
	}
	for _, r := range o.Resource {
		form.Add("resource", r)
	}
}

// Refresh redeems a refresh token (RFC 6749 §6). With opts.Scopes it asks for
// a narrower token than the grant carries. When the response has no new
// refresh token the old one stays valid and Token.RefreshToken is empty: the
// caller decides, so a rotation is never confused with a reuse.
func (c *Client) Refresh(ctx context.Context, refreshToken string, opts TokenOptions) (*Token, error) {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}}
	c.apply(opts, form)
	return c.token(ctx, form, refreshToken)
}

// ClientCredentials asks for a token for the client itself (RFC 6749 §4.4).
func (c *Client) ClientCredentials(ctx context.Context, opts TokenOptions) (*Token, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	c.apply(opts, form)
	return c.token(ctx, form)
}

// ExchangeCode redeems an authorization code (RFC 6749 §4.1.3, RFC 7636).
func (c *Client) ExchangeCode(ctx context.Context, code, redirectURI, codeVerifier string) (*Token, error) {
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}}
	if redirectURI != "" {
		form.Set("redirect_uri", redirectURI)
	}
	if codeVerifier != "" {
		form.Set("code_verifier", codeVerifier)
	}
	return c.token(ctx, form, code, codeVerifier)
}

// TokenTypeAccessToken is the RFC 8693 token type of an OAuth access token.
const TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"

// Exchange trades a subject token for another token (RFC 8693).
func (c *Client) Exchange(ctx context.Context, subjectToken, subjectTokenType string, opts TokenOptions) (*Token, error) {
	form := url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {subjectToken},
		"subject_token_type": {subjectTokenType},
		// Ask for an access token only: a server that defaults to a
		// refresh token (zitadel's) would leave one alive upstream that
		// nothing holds or revokes.
		"requested_token_type": {TokenTypeAccessToken},
	}
	c.apply(opts, form)
	return c.token(ctx, form, subjectToken)
}

// token posts form to the token endpoint. secrets are the request's secret
// values, scrubbed from anything the upstream echoes back.
func (c *Client) token(ctx context.Context, form url.Values, secrets ...string) (*Token, error) {
	for k, vs := range c.cfg.TokenParams {
		if form.Get(k) == "" {
			form[k] = vs
		}
	}
	sent := time.Now()
	body, err := c.post(ctx, "token", c.cfg.Endpoints.Token, form, secrets)
	if err != nil {
		return nil, err
	}
	tok, err := parseTokenResponse(body.data, body.contentType, c.cfg.ResponseFields)
	if err != nil {
		return nil, &Error{Endpoint: "token", StatusCode: body.status, Err: err}
	}
	if tok.lifetime == 0 && c.cfg.DefaultLifetime > 0 {
		tok.lifetime = min(c.cfg.DefaultLifetime, MaxTokenLifetime)
	}
	// The server counts lifetimes from some moment after we sent the
	// request, in whole seconds: counted from the send, less a second, an
	// expiry is never later than the server's.
	if tok.lifetime > 0 {
		tok.Expiry = sent.Add(tok.lifetime - time.Second)
	}
	if tok.refreshLifetime > 0 {
		tok.RefreshExpiry = sent.Add(tok.refreshLifetime - time.Second)
	}
	return tok, nil
}

type rawResponse struct {
	status      int
	contentType string
	data        []byte
}

// maxResponse bounds what we read from an upstream.
const maxResponse = 1 << 20

// post sends an authenticated form POST and returns a successful body, or an
// *Error. An OAuth error in the body wins over the HTTP status: GitHub and
// Slack send errors with 200, and a device poll must see
// authorization_pending whatever the status.
func (c *Client) post(ctx context.Context, endpoint, target string, form url.Values, secrets []string) (*rawResponse, error) {
	if target == "" {
		return nil, &Error{Endpoint: endpoint, Err: errors.New("no URL configured")}
	}
	header := http.Header{}
	authSecrets, err := c.authenticate(form, header, target)
	if err != nil {
		return nil, &Error{Endpoint: endpoint, Err: err}
	}
	// A fresh slice: the caller's must not grow.
	secrets = append(append(append([]string(nil), secrets...), authSecrets...), c.cfg.ClientSecret)
	reqBody, reqType := form.Encode(), "application/x-www-form-urlencoded"
	if c.cfg.JSONRequests && endpoint == "token" {
		reqBody, reqType = jsonBody(form), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(reqBody))
	if err != nil {
		return nil, &Error{Endpoint: endpoint, Err: transportError(err, secrets)}
	}
	req.Header = header
	req.Header.Set("Content-Type", reqType)
	req.Header.Set("Accept", "application/json")
	resp, data, err := c.do(endpoint, req, secrets)
	if err != nil {
		e := &Error{Endpoint: endpoint, Err: err}
		if resp != nil {
			e.StatusCode = resp.StatusCode
		}
		return nil, e
	}
	contentType := resp.Header.Get("Content-Type")
	e := &Error{Endpoint: endpoint, StatusCode: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		e.Err = errRedirect
		return nil, e
	}
	if body, ok := parseErrorBody(data, contentType); ok {
		e.setUpstream(body, secrets)
		if e.Code != "" && slices.Contains(c.cfg.InvalidGrantCodes, e.Code) {
			e.ProviderCode, e.Code = e.Code, ErrCodeInvalidGrant
		}
		return nil, e
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return &rawResponse{status: resp.StatusCode, contentType: contentType, data: data}, nil
	}
	return nil, e
}

// do sends req and reads its bounded body. Its error is scrubbed of
// secrets; resp is set when the failure came after the headers.
func (c *Client) do(endpoint string, req *http.Request, secrets []string) (*http.Response, []byte, error) {
	if c.cfg.Observe != nil {
		start := time.Now()
		defer func() { c.cfg.Observe(endpoint, time.Since(start)) }()
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, nil, transportError(err, secrets)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return resp, nil, transportError(err, secrets)
	}
	return resp, data, nil
}

// jsonBody is form as a JSON object; a repeated parameter becomes an array.
func jsonBody(form url.Values) string {
	obj := make(map[string]any, len(form))
	for k, vs := range form {
		if len(vs) == 1 {
			obj[k] = vs[0]
		} else {
			obj[k] = vs
		}
	}
	b, _ := json.Marshal(obj)
	return string(b)
}

// authenticate adds the client's credentials to the request and returns the
// secret values it put there, to be scrubbed from anything echoed back.
func (c *Client) authenticate(form url.Values, header http.Header, audience string) ([]string, error) {
	switch c.cfg.AuthMethod {
	case ClientSecretBasic:
		// RFC 6749 §2.3.1: id and secret are form-encoded before base64.
		creds := url.QueryEscape(c.cfg.ClientID) + ":" + url.QueryEscape(c.cfg.ClientSecret)
		header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(creds)))
		return []string{c.cfg.ClientSecret, creds}, nil
	case ClientSecretPost:
		form.Set("client_id", c.cfg.ClientID)
		form.Set("client_secret", c.cfg.ClientSecret)
		return []string{c.cfg.ClientSecret}, nil
	case PrivateKeyJWT:
		assertion, err := clientAssertion(c.cfg.ClientID, c.cfg.KeyID, audience, c.cfg.PrivateKey)
		if err != nil {
			return nil, err
		}
		form.Set("client_id", c.cfg.ClientID)
		form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		form.Set("client_assertion", assertion)
		// The parts too: an upstream may echo the signature or claims alone.
		return append([]string{assertion}, strings.Split(assertion, ".")...), nil
	case AuthNone:
		form.Set("client_id", c.cfg.ClientID)
	}
	return nil, nil
}

// maxRetryAfter bounds a Retry-After: beyond it the value is absurd, and an
// unbounded one overflows time.Duration.
const maxRetryAfter = 24 * time.Hour

func retryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		switch {
		case secs <= 0:
			return 0
		case secs >= int64(maxRetryAfter/time.Second):
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return min(d, maxRetryAfter)
		}
	}
	return 0
}

// parseTokenResponse reads JSON, or the form encoding some servers (GitHub
// without Accept) still send.
func parseTokenResponse(data []byte, contentType string, fields []string) (*Token, error) {
	var raw struct {
		AccessToken     string          `json:"access_token"`
		TokenType       string          `json:"token_type"`
		RefreshToken    string          `json:"refresh_token"`
		ExpiresIn       json.RawMessage `json:"expires_in"`
		Scope           *string         `json:"scope"`
		Scopes          json.RawMessage `json:"scopes"` // Bitbucket's name
		IssuedTokenType string          `json:"issued_token_type"`
		IDToken         string          `json:"id_token"`
		RefreshExpires  json.RawMessage `json:"refresh_token_expires_in"`
	}
	var expiresIn, refreshExpiresIn time.Duration
	var kept map[string]string
	trimmed := bytes.TrimSpace(data)
	mediaType, _, _ := mime.ParseMediaType(contentType)
	// The body's shape decides: some servers label JSON as text/plain.
	isForm := (mediaType == "application/x-www-form-urlencoded" || mediaType == "text/plain") &&
		!(len(trimmed) > 0 && trimmed[0] == '{')
	if isForm {
		vals, err := url.ParseQuery(string(trimmed))
		if err != nil {
			return nil, errors.New("token response is neither JSON nor form-encoded")
		}
		raw.AccessToken, raw.TokenType, raw.RefreshToken = vals.Get("access_token"), vals.Get("token_type"), vals.Get("refresh_token")
		raw.IssuedTokenType = vals.Get("issued_token_type")
		raw.IDToken = vals.Get("id_token")
		if vals.Has("scope") {
			s := vals.Get("scope")
			raw.Scope = &s
		}
		if e := strings.TrimSpace(vals.Get("expires_in")); e != "" {
			if expiresIn, err = parseSeconds(e, MaxTokenLifetime); err != nil {
				return nil, errors.New("token response has a malformed expires_in")
			}
		}
		if e := strings.TrimSpace(vals.Get("refresh_token_expires_in")); e != "" {
			if refreshExpiresIn, err = parseSeconds(e, MaxTokenLifetime); err != nil {
				return nil, errors.New("token response has a malformed refresh_token_expires_in")
			}
		}
		kept = formFields(vals, fields)
	} else {
		if err := json.Unmarshal(trimmed, &raw); err != nil {
			return nil, errors.New("token response is not valid JSON")
		}
		var err error
		if expiresIn, err = parseJSONSeconds(raw.ExpiresIn, MaxTokenLifetime); err != nil {
			return nil, errors.New("token response has a malformed expires_in")
		}
		if refreshExpiresIn, err = parseJSONSeconds(raw.RefreshExpires, MaxTokenLifetime); err != nil {
			return nil, errors.New("token response has a malformed refresh_token_expires_in")
		}
		kept = jsonFields(trimmed, fields)
	}
	if raw.AccessToken == "" {
		return nil, errors.New("token response has no access_token")
	}
	tok := &Token{
		AccessToken:     raw.AccessToken,
		TokenType:       raw.TokenType,
		RefreshToken:    raw.RefreshToken,
		IssuedTokenType: raw.IssuedTokenType,
		Subject:         idTokenSubject(raw.IDToken),
		Fields:          kept,
	}
	if raw.RefreshToken != "" {
		tok.refreshLifetime = refreshExpiresIn
	}
	if tok.TokenType == "" {
		tok.TokenType = "Bearer"
	}
	var scopes string
	if raw.Scope == nil && json.Unmarshal(raw.Scopes, &scopes) == nil {
		raw.Scope = &scopes
	}
	if raw.Scope != nil {
		tok.ScopeReturned = true
		tok.Scopes = splitScopes(*raw.Scope)
	}
	if expiresIn > 0 {
		tok.lifetime = expiresIn
		tok.Expiry = time.Now().Add(expiresIn)
	}
	return tok, nil
}

// MaxTokenLifetime caps a token's expires_in. golang.org/x/oauth2 clamps
// expires_in to an int32 of seconds (68 years); a year is already longer than
// any real access token lives, and keeps every expiry far from overflow.
const MaxTokenLifetime = 365 * 24 * time.Hour

var errMalformedSeconds = errors.New("not a number of seconds")

// parseJSONSeconds reads a lifetime in seconds given as a JSON number or a
// numeric string (both are seen upstream). See parseSeconds for the result.
func parseJSONSeconds(raw json.RawMessage, ceiling time.Duration) (time.Duration, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, errMalformedSeconds
		}
		return parseSeconds(strings.TrimSpace(s), ceiling)
	}
	return parseSeconds(string(raw), ceiling)
}

// parseSeconds reads a lifetime in seconds written as a JSON number. As in
// golang.org/x/oauth2, 0 means "not given" and yields 0, and a huge value is
// clamped (there to 2^31-1 s, here to ceiling, also for 1e19 or 1e400).
// Unlike it, a negative or sub-second value also means "not given" (x/oauth2
// would make the token already expired, and a caller refresh in a loop), and
// a fraction is cut rather than rejected. NaN, Inf, hex and the other
// non-JSON spellings strconv would accept are malformed.
func parseSeconds(lit string, ceiling time.Duration) (time.Duration, error) {
	if lit == "" || !(lit[0] == '-' || '0' <= lit[0] && lit[0] <= '9') || !json.Valid([]byte(lit)) {
		return 0, errMalformedSeconds
	}
	f, err := strconv.ParseFloat(lit, 64)
	// A JSON number can only fail by range: ±Inf, or a value that rounds to 0.
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, errMalformedSeconds
	}
	switch {
	case !(f >= 1):
		return 0, nil
	case f >= ceiling.Seconds():
		return ceiling, nil
	}
	return time.Duration(f) * time.Second, nil
}

// idTokenSubject reads the sub claim of an ID token received straight
// from the token endpoint, where TLS authenticates the issuer (OpenID
// Connect Core 3.1.3.7), so the signature is not checked. It is used only
// to record who authorized a grant; anything malformed gives "".
func idTokenSubject(idToken string) string {
	parts := strings.Split(idToken, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(payload, &claims) != nil || len(claims.Sub) > 255 {
		return ""
	}
	return claims.Sub
}
