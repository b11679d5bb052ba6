package oauthclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Metadata is the part of RFC 8414 / OIDC Discovery metadata the engine uses.
type Metadata struct {
	Issuer                            string   `json:"issuer"`
	AuthorizationEndpoint             string   `json:"authorization_endpoint"`
	TokenEndpoint                     string   `json:"token_endpoint"`
	RevocationEndpoint                string   `json:"revocation_endpoint"`
	IntrospectionEndpoint             string   `json:"introspection_endpoint"`
	DeviceAuthorizationEndpoint       string   `json:"device_authorization_endpoint"`
	ScopesSupported                   []string `json:"scopes_supported"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	// IssParameterSupported: the server sends iss in authorization
	// responses (RFC 9207), so a response without it is refused.
	IssParameterSupported bool `json:"authorization_response_iss_parameter_supported"`
}

// Endpoints returns the discovered endpoints.
func (m *Metadata) Endpoints() Endpoints {
	return Endpoints{
		Issuer:              m.Issuer,
		Authorization:       m.AuthorizationEndpoint,
		Token:               m.TokenEndpoint,
		Revocation:          m.RevocationEndpoint,
		Introspection:       m.IntrospectionEndpoint,
		DeviceAuthorization: m.DeviceAuthorizationEndpoint,
	}
}

// Discover fetches issuer metadata: RFC 8414 first, then OpenID Connect
// Discovery. The metadata must name the same issuer (RFC 8414 §3.3), so a
// document cannot redirect us to someone else's endpoints.
func Discover(ctx context.Context, httpClient *http.Client, issuer string) (*Metadata, error) {
	if err := CheckEndpointURL(issuer); err != nil {
		return nil, fmt.Errorf("issuer %w", err)
	}
	u, err := url.Parse(issuer)
	if err != nil {
		return nil, err
	}
	path := strings.TrimSuffix(u.Path, "/")
	// RFC 8414 §3.1 inserts the well-known segment before the issuer's path;
	// OIDC Discovery §4 appends it.
	candidates := []string{
		u.Scheme + "://" + u.Host + "/.well-known/oauth-authorization-server" + path,
		u.Scheme + "://" + u.Host + path + "/.well-known/openid-configuration",
	}
	var errs []error
	for _, target := range candidates {
		md, err := fetchMetadata(ctx, httpClient, target)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if strings.TrimSuffix(md.Issuer, "/") != strings.TrimSuffix(issuer, "/") {
			return nil, fmt.Errorf("metadata at %s names issuer %q, expected %q", target, md.Issuer, issuer)
		}
		if md.TokenEndpoint == "" {
			return nil, fmt.Errorf("metadata at %s has no token_endpoint", target)
		}
		return md, nil
	}
	return nil, errors.Join(errs...)
}

func fetchMetadata(ctx context.Context, httpClient *http.Client, target string) (*Metadata, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", target, transportError(err, nil))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", target, resp.StatusCode)
	}
	var md Metadata
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(&md); err != nil {
		return nil, fmt.Errorf("%s: not valid JSON metadata", target)
	}
	return &md, nil
}
