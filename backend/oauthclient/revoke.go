package oauthclient

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// Token type hints (RFC 7009 §2.1).
const (
	HintAccessToken  = "access_token"
	HintRefreshToken = "refresh_token"
)

// RevocationStyle is how a server revokes tokens.
type RevocationStyle string

const (
	// RevokeRFC7009 posts the token to the revocation endpoint (RFC 7009).
	RevokeRFC7009 RevocationStyle = "rfc7009"
	// RevokeGitHub is GitHub's REST API: DELETE the revocation URL
	// (.../applications/{client_id}/token) with a JSON access_token and the
	// client's Basic credentials. A refresh token cannot be revoked alone:
	// revoking a grant deletes the whole authorization (.../grant) with a
	// fresh access token.
	RevokeGitHub RevocationStyle = "github"
	// RevokeSlack is Slack's auth.revoke, called with the token as its
	// Bearer credential. Refresh tokens are revoked through a fresh access
	// token, like GitHub's.
	RevokeSlack RevocationStyle = "slack"
	// RevokeNone: the server cannot revoke (Microsoft Entra ID).
	RevokeNone RevocationStyle = "none"
)

// ErrNoRevocationEndpoint means the server offers no way to revoke.
var ErrNoRevocationEndpoint = errors.New("the provider has no revocation endpoint")

// ErrRevokesWholeGrant means the server can revoke a refresh token only
// by revoking the whole authorization, which would also kill the tokens
// that replaced it.
var ErrRevokesWholeGrant = errors.New("the provider revokes refresh tokens only with the whole authorization")

// Revoke asks the server to revoke token. A server answers success for
// tokens it does not know or has already revoked, so revocation is
// idempotent; we also treat invalid_token (sent by some servers for an
// already-dead token) as success.
func (c *Client) Revoke(ctx context.Context, token, hint string) error {
	if c.cfg.Revocation == RevokeNone || c.cfg.Endpoints.Revocation == "" {
		return ErrNoRevocationEndpoint
	}
	switch c.cfg.Revocation {
	case RevokeGitHub, RevokeSlack:
		if hint == HintRefreshToken {
			return ErrRevokesWholeGrant
		}
		return c.revokeAccessToken(ctx, c.cfg.Endpoints.Revocation, token)
	}
	form := url.Values{"token": {token}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	_, err := c.post(ctx, "revocation", c.cfg.Endpoints.Revocation, form, []string{token})
	if HasCode(err, "invalid_token") {
		return nil
	}
	return err
}

// RevokeGrant ends the authorization behind refreshToken: the refresh
// token and, where the server cascades, its access tokens. With the
// GitHub and Slack styles it refreshes first; if the revocation then
// fails, replacement is the rotated refresh token that now stands for the
// grant: the caller must keep it for the retry, or the retry would find
// the old one dead and take the authorization for revoked.
func (c *Client) RevokeGrant(ctx context.Context, refreshToken string) (replacement string, err error) {
	switch c.cfg.Revocation {
	case RevokeGitHub, RevokeSlack:
		if c.cfg.Endpoints.Revocation == "" {
			return "", ErrNoRevocationEndpoint
		}
		// Only an access token can name the authorization to these APIs.
		tok, err := c.Refresh(ctx, refreshToken, TokenOptions{})
		if IsInvalidGrant(err) {
			return "", nil // already dead
		}
		if err != nil {
			return "", err
		}
		target := c.cfg.Endpoints.Revocation
		if c.cfg.Revocation == RevokeGitHub {
			target = strings.TrimSuffix(target, "/token") + "/grant"
		}
		if err := c.revokeAccessToken(ctx, target, tok.AccessToken); err != nil {
			return tok.RefreshToken, err
		}
		return "", nil
	}
	return "", c.Revoke(ctx, refreshToken, HintRefreshToken)
}

// revokeAccessToken is the GitHub or Slack call that revokes one access
// token (at GitHub's .../grant URL: its whole authorization).
func (c *Client) revokeAccessToken(ctx context.Context, target, token string) error {
	secrets := []string{token, c.cfg.ClientSecret}
	var req *http.Request
	var err error
	if c.cfg.Revocation == RevokeGitHub {
		body, _ := json.Marshal(map[string]string{"access_token": token})
		req, err = http.NewRequestWithContext(ctx, http.MethodDelete, target, strings.NewReader(string(body)))
		if err == nil {
			// GitHub authenticates this call as the OAuth app, whatever the
			// token endpoint's method.
			req.SetBasicAuth(c.cfg.ClientID, c.cfg.ClientSecret)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/vnd.github+json")
			req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
		}
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(""))
		if err == nil {
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Accept", "application/json")
		}
	}
	if err != nil {
		return &Error{Endpoint: "revocation", Err: transportError(err, secrets)}
	}
	resp, data, err := c.do("revocation", req, secrets)
	if err != nil {
		return &Error{Endpoint: "revocation", Err: err}
	}
	e := &Error{Endpoint: "revocation", StatusCode: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	if c.cfg.Revocation == RevokeGitHub {
		switch {
		case resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK:
			return nil
		case resp.StatusCode == http.StatusNotFound:
			return nil // the token or authorization is already gone
		}
		if body, ok := parseErrorBody(data, resp.Header.Get("Content-Type")); ok {
			e.setUpstream(body, secrets)
		}
		return e
	}
	// Slack answers 200 with ok true or false.
	if body, ok := parseErrorBody(data, resp.Header.Get("Content-Type")); ok {
		e.setUpstream(body, secrets)
		switch e.Code {
		case "invalid_auth", "token_revoked", "account_inactive", "not_authed", "token_expired":
			return nil // the token is already dead
		}
		return e
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	return e
}

// Introspection is the part of an RFC 7662 answer the engine uses.
type Introspection struct {
	Active    bool   `json:"active"`
	Scope     string `json:"scope"`
	ClientID  string `json:"client_id"`
	ExpiresAt int64  `json:"exp"`
	TokenType string `json:"token_type"`
	Subject   string `json:"sub"`
}

// ErrNoIntrospectionEndpoint means the server offers no introspection.
var ErrNoIntrospectionEndpoint = errors.New("the provider has no introspection endpoint")

// Introspect asks whether token is still active (RFC 7662).
func (c *Client) Introspect(ctx context.Context, token, hint string) (*Introspection, error) {
	if c.cfg.Endpoints.Introspection == "" {
		return nil, ErrNoIntrospectionEndpoint
	}
	form := url.Values{"token": {token}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	body, err := c.post(ctx, "introspection", c.cfg.Endpoints.Introspection, form, []string{token})
	if err != nil {
		return nil, err
	}
	var out Introspection
	if err := json.Unmarshal(body.data, &out); err != nil {
		return nil, &Error{Endpoint: "introspection", StatusCode: body.status, Err: errors.New("introspection response is not valid JSON")}
	}
	return &out, nil
}
