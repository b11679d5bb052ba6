package oauthclient

import (
	"golang.org/x/oauth2"
)

// NewCodeVerifier returns a fresh PKCE code verifier (RFC 7636 §4.1).
func NewCodeVerifier() string { return oauth2.GenerateVerifier() }

// AuthCodeURL builds the authorization request URL for the code flow with
// PKCE S256 (RFC 6749 §4.1.1, RFC 7636 §4.3).
func (c *Client) AuthCodeURL(redirectURI, state, codeVerifier string, scopes []string, extra map[string]string) string {
	conf := oauth2.Config{
		ClientID:    c.cfg.ClientID,
		Endpoint:    oauth2.Endpoint{AuthURL: c.cfg.Endpoints.Authorization},
		RedirectURL: redirectURI,
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(codeVerifier)}
	if len(scopes) > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("scope", c.joinScopes(scopes)))
	}
	for k, v := range extra {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	return conf.AuthCodeURL(state, opts...)
}

// ValidCodeVerifier reports whether v is a code verifier RFC 7636 (4.1)
// allows: 43 to 128 unreserved characters.
func ValidCodeVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for _, c := range v {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.', c == '_', c == '~':
		default:
			return false
		}
	}
	return true
}
