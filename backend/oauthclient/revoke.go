package oauthclient

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
)

// Token type hints (RFC 7009 §2.1).
const (
	HintAccessToken  = "access_token"
	HintRefreshToken = "refresh_token"
)

// ErrNoRevocationEndpoint means the server offers no way to revoke.
var ErrNoRevocationEndpoint = errors.New("the provider has no revocation endpoint")

// Revoke asks the server to revoke token (RFC 7009). A server answers 200 for
// tokens it does not know or has already revoked, so revocation is
// idempotent; we also treat invalid_token (sent by some servers for an
// already-dead token) as success.
func (c *Client) Revoke(ctx context.Context, token, hint string) error {
	if c.cfg.Endpoints.Revocation == "" {
		return ErrNoRevocationEndpoint
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
