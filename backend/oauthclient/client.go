package oauthclient

import (
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
}

// TokenOptions are the optional parameters of a token request.
type TokenOptions struct {
	Scopes   []string
	Audience []string // RFC 8693
	Resource []string // RFC 8707
}

func (o TokenOptions) apply(form url.Values) {
	if len(o.Scopes) > 0 {
		form.Set("scope", strings.Join(o.Scopes, " "))
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
	opts.apply(form)
	return c.token(ctx, form, refreshToken)
}

// ClientCredentials asks for a token for the client itself (RFC 6749 §4.4).
func (c *Client) ClientCredentials(ctx context.Context, opts TokenOptions) (*Token, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	opts.apply(form)
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
	}
	opts.apply(form)
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
	body, err := c.post(ctx, "token", c.cfg.Endpoints.Token, form, secrets)
	if err != nil {
		return nil, err
	}
	tok, err := parseTokenResponse(body.data, body.contentType)
	if err != nil {
		return nil, &Error{Endpoint: "token", StatusCode: body.status, Err: err}
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

// post sends an authenticated form POST and returns a 2xx body, or an *Error.
func (c *Client) post(ctx context.Context, endpoint, target string, form url.Values, secrets []string) (*rawResponse, error) {
	if target == "" {
		return nil, &Error{Endpoint: endpoint, Err: errors.New("no URL configured")}
	}
	header := http.Header{}
	if err := c.authenticate(form, header, target); err != nil {
		return nil, &Error{Endpoint: endpoint, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, &Error{Endpoint: endpoint, Err: err}
	}
	req.Header = header
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, &Error{Endpoint: endpoint, Err: transportError(err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, &Error{Endpoint: endpoint, StatusCode: resp.StatusCode, Err: transportError(err)}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return &rawResponse{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), data: data}, nil
	}
	e := &Error{Endpoint: endpoint, StatusCode: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		e.Err = errRedirect
		return nil, e
	}
	secrets = append(secrets, c.cfg.ClientSecret)
	var oe struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if json.Unmarshal(data, &oe) == nil && oe.Error != "" {
		e.Code = scrub(oe.Error, secrets)
		e.Description = scrub(oe.ErrorDescription, secrets)
	}
	return nil, e
}

// transportError drops the request URL from *url.Error: the message stays
// useful and never depends on what the URL might carry.
func transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (c *Client) authenticate(form url.Values, header http.Header, audience string) error {
	switch c.cfg.AuthMethod {
	case ClientSecretBasic:
		// RFC 6749 §2.3.1: id and secret are form-encoded before base64.
		creds := url.QueryEscape(c.cfg.ClientID) + ":" + url.QueryEscape(c.cfg.ClientSecret)
		header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(creds)))
	case ClientSecretPost:
		form.Set("client_id", c.cfg.ClientID)
		form.Set("client_secret", c.cfg.ClientSecret)
	case PrivateKeyJWT:
		assertion, err := clientAssertion(c.cfg.ClientID, c.cfg.KeyID, audience, c.cfg.PrivateKey)
		if err != nil {
			return err
		}
		form.Set("client_id", c.cfg.ClientID)
		form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		form.Set("client_assertion", assertion)
	case AuthNone:
		form.Set("client_id", c.cfg.ClientID)
	}
	return nil
}

func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// parseTokenResponse reads JSON, or the form encoding some servers (GitHub
// without Accept) still send.
func parseTokenResponse(data []byte, contentType string) (*Token, error) {
	var raw struct {
		AccessToken     string          `json:"access_token"`
		TokenType       string          `json:"token_type"`
		RefreshToken    string          `json:"refresh_token"`
		ExpiresIn       json.RawMessage `json:"expires_in"`
		Scope           *string         `json:"scope"`
		IssuedTokenType string          `json:"issued_token_type"`
	}
	mediaType, _, _ := mime.ParseMediaType(contentType)
	if mediaType == "application/x-www-form-urlencoded" || mediaType == "text/plain" {
		vals, err := url.ParseQuery(string(data))
		if err != nil {
			return nil, errors.New("token response is neither JSON nor form-encoded")
		}
		raw.AccessToken, raw.TokenType, raw.RefreshToken = vals.Get("access_token"), vals.Get("token_type"), vals.Get("refresh_token")
		raw.IssuedTokenType = vals.Get("issued_token_type")
		if vals.Has("scope") {
			s := vals.Get("scope")
			raw.Scope = &s
		}
		if e := vals.Get("expires_in"); e != "" {
			raw.ExpiresIn = json.RawMessage(strconv.Quote(e))
		}
	} else if err := json.Unmarshal(data, &raw); err != nil {
		return nil, errors.New("token response is not valid JSON")
	}
	if raw.AccessToken == "" {
		return nil, errors.New("token response has no access_token")
	}
	tok := &Token{
		AccessToken:     raw.AccessToken,
		TokenType:       raw.TokenType,
		RefreshToken:    raw.RefreshToken,
		IssuedTokenType: raw.IssuedTokenType,
	}
	if tok.TokenType == "" {
		tok.TokenType = "Bearer"
	}
	if raw.Scope != nil {
		tok.ScopeReturned = true
		tok.Scopes = strings.Fields(*raw.Scope)
	}
	secs, err := parseExpiresIn(raw.ExpiresIn)
	if err != nil {
		return nil, err
	}
	if secs > 0 {
		tok.Expiry = time.Now().Add(time.Duration(secs) * time.Second)
	}
	return tok, nil
}

// parseExpiresIn accepts a number or a numeric string (both are seen upstream).
func parseExpiresIn(raw json.RawMessage) (int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, errors.New("token response has a malformed expires_in")
		}
		n = json.Number(strings.TrimSpace(s))
	}
	f, err := n.Float64()
	if err != nil || f < 0 {
		return 0, errors.New("token response has a malformed expires_in")
	}
	return int64(f), nil
}
