package backend

import (
	"sort"
	"strings"
	"time"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

// A preset is what one well-known provider needs: its endpoints and how it
// departs from the RFCs. A provider written with preset=NAME takes every
// value the request does not set from here; reading it shows which ones
// (preset_fields). docs/providers/ has a page per preset saying where each
// value comes from.
type preset struct {
	// Endpoint templates: {tenant} and {client_id} are filled in.
	endpoints          oauthclient.Endpoints
	clientAuth         oauthclient.AuthMethod
	revocation         oauthclient.RevocationStyle
	revocationCascades bool
	scopes             []string
	authParams         map[string]string
	defaultTokenTTL    time.Duration
	responseFields     []string
	invalidGrantErrors []string
	// scopeDelimiter is "comma" where the provider joins scopes with
	// commas; jsonRequests where its token endpoint documents JSON bodies.
	scopeDelimiter string
	jsonRequests   bool
	// tenant is the default of the tenant field; "" when the preset has
	// none.
	tenant string
}

// presetNames lists the presets, for help text and errors.
func presetNames() []string {
	names := []string{"atlassian", "bitbucket", "github", "gitlab", "google", "microsoft", "salesforce", "slack"}
	sort.Strings(names)
	return names
}

// presetNamed returns the named preset. Values are from each provider's
// public documentation, as docs/providers/NAME.md cites.
func presetNamed(name string) (preset, bool) {
	switch name {
	case "github":
		// GitHub Apps (and OAuth apps with expiring tokens): 8 h access
		// tokens, rotating refresh tokens with refresh_token_expires_in.
		return preset{
			endpoints: oauthclient.Endpoints{
				Authorization:       "https://github.com/login/oauth/authorize",
				Token:               "https://github.com/login/oauth/access_token",
				DeviceAuthorization: "https://github.com/login/device/code",
				Revocation:          "https://api.github.com/applications/{client_id}/token",
			},
			clientAuth: oauthclient.ClientSecretPost,
			revocation: oauthclient.RevokeGitHub,
			// Tokens of OAuth apps without expiration carry no expires_in.
			defaultTokenTTL:    8 * time.Hour,
			invalidGrantErrors: []string{"bad_refresh_token", "bad_refresh_verification_code", "bad_verification_code"},
		}, true
	case "gitlab":
		return preset{
			endpoints: oauthclient.Endpoints{
				Authorization: "https://gitlab.com/oauth/authorize",
				Token:         "https://gitlab.com/oauth/token",
				Revocation:    "https://gitlab.com/oauth/revoke",
				// GitLab documents no RFC 7662 endpoint (only its own
				// /oauth/token/info).
			},
			clientAuth: oauthclient.ClientSecretPost,
			revocation: oauthclient.RevokeRFC7009,
			// Doorkeeper keeps an access token and its refresh token in one
			// record: revoking one revokes the other.
			revocationCascades: true,
		}, true
	case "google":
		return preset{
			endpoints: oauthclient.Endpoints{
				Authorization:       "https://accounts.google.com/o/oauth2/v2/auth",
				Token:               "https://oauth2.googleapis.com/token",
				Revocation:          "https://oauth2.googleapis.com/revoke",
				DeviceAuthorization: "https://oauth2.googleapis.com/device/code",
			},
			clientAuth: oauthclient.ClientSecretPost,
			revocation: oauthclient.RevokeRFC7009,
			// Revoking any token of a grant revokes the whole grant.
			revocationCascades: true,
			authParams:         map[string]string{"access_type": "offline", "prompt": "consent"},
		}, true
	case "microsoft":
		return preset{
			endpoints: oauthclient.Endpoints{
				Authorization:       "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
				Token:               "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
				DeviceAuthorization: "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode",
			},
			clientAuth: oauthclient.ClientSecretPost,
			// Entra ID has no revocation endpoint: leases end with their
			// token's lifetime.
			revocation: oauthclient.RevokeNone,
			scopes:     []string{"offline_access"},
			tenant:     "common",
			// MFA or Conditional Access now needs the user: the grant
			// cannot refresh again until it is re-authorized.
			invalidGrantErrors: []string{"interaction_required"},
		}, true
	case "slack":
		return preset{
			endpoints: oauthclient.Endpoints{
				Authorization: "https://slack.com/oauth/v2/authorize",
				Token:         "https://slack.com/api/oauth.v2.access",
				Revocation:    "https://slack.com/api/auth.revoke",
			},
			clientAuth:         oauthclient.ClientSecretPost,
			revocation:         oauthclient.RevokeSlack,
			revocationCascades: true,
			responseFields:     []string{"team.id", "team.name", "enterprise.id", "authed_user.id"},
			invalidGrantErrors: []string{"invalid_refresh_token"},
			scopeDelimiter:     scopeDelimiterComma,
		}, true
	case "atlassian":
		return preset{
			endpoints: oauthclient.Endpoints{
				Authorization: "https://auth.atlassian.com/authorize",
				Token:         "https://auth.atlassian.com/oauth/token",
			},
			clientAuth:   oauthclient.ClientSecretPost,
			revocation:   oauthclient.RevokeNone,
			scopes:       []string{"offline_access"},
			authParams:   map[string]string{"audience": "api.atlassian.com", "prompt": "consent"},
			jsonRequests: true,
		}, true
	case "salesforce":
		return preset{
			endpoints: oauthclient.Endpoints{
				Authorization: "https://login.salesforce.com/services/oauth2/authorize",
				Token:         "https://login.salesforce.com/services/oauth2/token",
				Revocation:    "https://login.salesforce.com/services/oauth2/revoke",
				Introspection: "https://login.salesforce.com/services/oauth2/introspect",
			},
			clientAuth: oauthclient.ClientSecretPost,
			revocation: oauthclient.RevokeRFC7009,
			// Token responses carry no expires_in; two hours is the
			// default session timeout.
			defaultTokenTTL: 2 * time.Hour,
			responseFields:  []string{"instance_url", "id"},
			scopes:          []string{"refresh_token", "api"},
		}, true
	case "bitbucket":
		return preset{
			endpoints: oauthclient.Endpoints{
				Authorization: "https://bitbucket.org/site/oauth2/authorize",
				Token:         "https://bitbucket.org/site/oauth2/access_token",
			},
			clientAuth: oauthclient.ClientSecretBasic,
			revocation: oauthclient.RevokeNone,
		}, true
	}
	return preset{}, false
}

// presetFields are the provider fields a preset can fill.
func presetFields() []string {
	return []string{
		"token_url", "authorization_url", "revocation_url", "introspection_url", "device_authorization_url",
		"client_auth", "revocation_style", "revocation_cascades", "scopes", "auth_params",
		"default_token_ttl", "response_fields", "invalid_grant_errors", "scope_delimiter", "token_request_format", "tenant",
	}
}

// applyPreset sets each preset field that the request did not set
// (explicit) from p's preset and returns the fields it set. Endpoint
// templates are filled with p's tenant and client_id.
func applyPreset(p *providerEntry, ps preset, explicit func(field string) bool) []string {
	if p.Tenant == "" && !explicit("tenant") {
		p.Tenant = ps.tenant
	}
	fill := func(u string) string {
		return strings.NewReplacer("{tenant}", p.Tenant, "{client_id}", p.ClientID).Replace(u)
	}
	var from []string
	for _, field := range presetFields() {
		if explicit(field) {
			continue
		}
		set := true
		switch field {
		case "token_url":
			p.Explicit.Token = fill(ps.endpoints.Token)
		case "authorization_url":
			p.Explicit.Authorization = fill(ps.endpoints.Authorization)
		case "revocation_url":
			p.Explicit.Revocation = fill(ps.endpoints.Revocation)
		case "introspection_url":
			p.Explicit.Introspection = fill(ps.endpoints.Introspection)
		case "device_authorization_url":
			p.Explicit.DeviceAuthorization = fill(ps.endpoints.DeviceAuthorization)
		case "client_auth":
			p.ClientAuth = string(ps.clientAuth)
		case "revocation_style":
			p.RevocationStyle = string(ps.revocation)
		case "revocation_cascades":
			p.RevocationCascades = ps.revocationCascades
		case "scopes":
			p.Scopes = ps.scopes
		case "auth_params":
			p.AuthParams = ps.authParams
		case "default_token_ttl":
			p.DefaultTokenTTL = ps.defaultTokenTTL
		case "response_fields":
			p.ResponseFields = ps.responseFields
		case "invalid_grant_errors":
			p.InvalidGrantErrors = ps.invalidGrantErrors
		case "scope_delimiter":
			p.ScopeDelimiter = ps.scopeDelimiter
		case "token_request_format":
			p.TokenRequestFormat = ""
			if ps.jsonRequests {
				p.TokenRequestFormat = tokenRequestJSON
			}
		case "tenant":
			set = ps.tenant != ""
		}
		if set {
			from = append(from, field)
		}
	}
	return from
}
