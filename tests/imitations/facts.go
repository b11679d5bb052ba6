package imitations

import "time"

// Fact is what an engine preset needs to know about one provider, taken
// from its public documentation (see the provider's file for the pages and
// for what is assumed). URL templates point at the REAL provider; {tenant}
// is Microsoft's tenant, {client_id} the client's id, {instance} a
// Salesforce My Domain host (login.salesforce.com for the generic login).
type Fact struct {
	Name string

	AuthorizationURL       string
	TokenURL               string
	RevocationURL          string // "" when none is documented
	GrantRevocationURL     string // GitHub only: revokes the whole authorization
	DeviceAuthorizationURL string // "" when there is no device flow
	IntrospectionURL       string // RFC 7662 only; "" when none is documented
	Issuer                 string // OpenID Connect issuer; "" for non-OIDC

	// RevokeStyle is rfc7009, github, slack or none.
	RevokeStyle string
	// RevokeAccessKillsGrant: revoking an access token also ends its refresh
	// token (and the grant).
	RevokeAccessKillsGrant bool
	// RefreshReturnsRefreshToken: a refresh answer carries a refresh_token.
	RefreshReturnsRefreshToken bool
	// RefreshRotates: the refresh token in a refresh answer is a new one.
	RefreshRotates bool
	// OldRefreshDiesOnRotation: after a rotation the old refresh token is
	// rejected.
	OldRefreshDiesOnRotation bool
	// RefreshTokenExpiresIn: responses carry refresh_token_expires_in.
	RefreshTokenExpiresIn bool
	// ExpiresIn: responses carry expires_in.
	ExpiresIn bool
	// AccessTokenLifetime is the documented access token lifetime (the
	// expires_in value, or the default session when expires_in is absent;
	// 0 when tokens do not expire).
	AccessTokenLifetime time.Duration
	// DefaultTokenTTL is what a client should assume when expires_in is
	// absent (0: the provider always sends it, or its tokens never expire).
	DefaultTokenTTL time.Duration
	// AuthParams are extra authorization request parameters needed for a
	// refresh token or for the request to be accepted.
	AuthParams map[string]string
	// DefaultScopes are scopes needed to get a refresh token.
	DefaultScopes []string
	// ScopeSeparator in the response's scope field (" " or ",").
	ScopeSeparator string
	// ScopeField is the response field holding the granted scopes.
	ScopeField string
	// ResponseFields are non-secret response fields consumers need, as
	// flat or dotted names.
	ResponseFields []string
	// DeadGrantErrors are the error codes meaning "the grant or refresh
	// token is dead; retrying cannot help".
	DeadGrantErrors []string
	// DeadGrantStatus is the HTTP status of those errors.
	DeadGrantStatus int
	// ClientAuth lists the documented client authentication methods
	// (client_secret_post, client_secret_basic), preferred first.
	ClientAuth []string
	// TokenRequestBody is the documented token request encoding (form or
	// json).
	TokenRequestBody string
	// ErrorsWithHTTP200: errors come with HTTP 200 (GitHub, Slack).
	ErrorsWithHTTP200 bool
	// RateLimit is how a rate limit answers.
	RateLimit string
	// PKCE: "S256", "S256 plain", or "" when not documented.
	PKCE string
	// Notes are short remarks; "assumed:" marks guesses.
	Notes []string
}

// Facts returns the table row for a provider; ok false for unknown names.
func Facts(name string) (Fact, bool) {
	for _, f := range FactTable {
		if f.Name == name {
			return f, true
		}
	}
	return Fact{}, false
}

// FactTable is every provider's row.
var FactTable = []Fact{
	{
		Name:                       "github",
		AuthorizationURL:           "https://github.com/login/oauth/authorize",
		TokenURL:                   "https://github.com/login/oauth/access_token",
		RevocationURL:              "https://api.github.com/applications/{client_id}/token",
		GrantRevocationURL:         "https://api.github.com/applications/{client_id}/grant",
		DeviceAuthorizationURL:     "https://github.com/login/device/code",
		RevokeStyle:                "github",
		RevokeAccessKillsGrant:     false,
		RefreshReturnsRefreshToken: true, RefreshRotates: true, OldRefreshDiesOnRotation: true,
		RefreshTokenExpiresIn: true, ExpiresIn: true,
		AccessTokenLifetime: 8 * time.Hour,
		DefaultTokenTTL:     0,
		ScopeSeparator:      ",", ScopeField: "scope",
		DeadGrantErrors:   []string{"bad_refresh_token", "bad_verification_code", "expired_token", "incorrect_device_code", "access_denied"},
		DeadGrantStatus:   200,
		ClientAuth:        []string{"client_secret_post"},
		TokenRequestBody:  "form",
		ErrorsWithHTTP200: true,
		RateLimit:         "403 or 429, x-ratelimit-remaining: 0, x-ratelimit-reset (epoch s), retry-after may be present",
		PKCE:              "S256",
		Notes: []string{
			"GitHub App user tokens (expiring): expires_in 28800, refresh_token_expires_in 15897600, rotation; classic OAuth-app tokens: no expires_in, no refresh token, never expire (DefaultTokenTTL must stay 0 for them, or be a policy choice)",
			"form-encoded answers unless Accept: application/json",
			"OAuth-app scope is comma-separated (repo,gist); GitHub App scope is always empty",
			"assumed: dead refresh token answers bad_refresh_token (not bad_refresh_verification_code, which no doc or observation mentions)",
			"revoking an access token (DELETE .../token) does not end the grant; DELETE .../grant ends every token of the user for the app",
			"refresh_token secret optional for device-flow tokens",
		},
	},
	{
		Name:                       "gitlab",
		AuthorizationURL:           "https://gitlab.com/oauth/authorize",
		TokenURL:                   "https://gitlab.com/oauth/token",
		RevocationURL:              "https://gitlab.com/oauth/revoke",
		DeviceAuthorizationURL:     "https://gitlab.com/oauth/authorize_device",
		IntrospectionURL:           "",
		RevokeStyle:                "rfc7009",
		RevokeAccessKillsGrant:     true,
		RefreshReturnsRefreshToken: true, RefreshRotates: true, OldRefreshDiesOnRotation: true,
		ExpiresIn: true, AccessTokenLifetime: 7200 * time.Second,
		ScopeSeparator: " ", ScopeField: "scope",
		DeadGrantErrors:  []string{"invalid_grant"},
		DeadGrantStatus:  400,
		ClientAuth:       []string{"client_secret_post", "client_secret_basic"},
		TokenRequestBody: "form",
		RateLimit:        "429 with Retry-After (GitLab.com throttles)",
		PKCE:             "S256",
		Notes: []string{
			"responses also carry created_at (epoch s)",
			"refresh invalidates the existing access_token AND refresh_token",
			"token info: GET /oauth/token/info (Doorkeeper), not RFC 7662; /oauth/introspect is undocumented",
			"assumed: revoking either token of the current pair ends the pair (Doorkeeper record)",
		},
	},
	{
		Name:                       "google",
		AuthorizationURL:           "https://accounts.google.com/o/oauth2/v2/auth",
		TokenURL:                   "https://oauth2.googleapis.com/token",
		RevocationURL:              "https://oauth2.googleapis.com/revoke",
		DeviceAuthorizationURL:     "https://oauth2.googleapis.com/device/code",
		Issuer:                     "https://accounts.google.com",
		RevokeStyle:                "rfc7009",
		RevokeAccessKillsGrant:     true,
		RefreshReturnsRefreshToken: false, RefreshRotates: false,
		ExpiresIn: true, AccessTokenLifetime: 3599 * time.Second,
		AuthParams:     map[string]string{"access_type": "offline", "prompt": "consent"},
		ScopeSeparator: " ", ScopeField: "scope",
		DeadGrantErrors:  []string{"invalid_grant"},
		DeadGrantStatus:  400,
		ClientAuth:       []string{"client_secret_post", "client_secret_basic"},
		TokenRequestBody: "form",
		RateLimit:        "assumed: 429 (rate_limit_exceeded)",
		PKCE:             "S256 plain",
		Notes: []string{
			"refresh_token only with access_type=offline, and only on first consent unless prompt=consent",
			"revoke takes token in query or form body, no client auth; revoking an access token also revokes its refresh token",
			"device flow: verification_url (not _uri); polling needs client_secret; authorization_pending is HTTP 428, slow_down and access_denied 403",
			"refresh_token_expires_in only for time-based access grants",
		},
	},
	{
		Name:                       "microsoft",
		AuthorizationURL:           "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
		TokenURL:                   "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
		DeviceAuthorizationURL:     "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode",
		Issuer:                     "https://login.microsoftonline.com/{tenant}/v2.0",
		RevokeStyle:                "none",
		RefreshReturnsRefreshToken: true, RefreshRotates: true, OldRefreshDiesOnRotation: false,
		ExpiresIn: true, AccessTokenLifetime: 3599 * time.Second,
		DefaultScopes:  []string{"offline_access"},
		ScopeSeparator: " ", ScopeField: "scope",
		DeadGrantErrors:  []string{"invalid_grant"},
		DeadGrantStatus:  400,
		ClientAuth:       []string{"client_secret_post", "client_secret_basic"},
		TokenRequestBody: "form",
		RateLimit:        "assumed: 429 with Retry-After",
		PKCE:             "S256 plain",
		Notes: []string{
			"tenant: common, organizations, consumers, a tenant GUID or domain",
			"old refresh tokens are not revoked by a refresh; refresh tokens live 90 days (24 h for SPA)",
			"errors carry error_codes [AADSTS n], trace_id, correlation_id; AADSTS70008/700082 expired, 50173 revoked",
			"device flow denial is authorization_declined; no slow_down documented",
		},
	},
	{
		Name:                       "slack",
		AuthorizationURL:           "https://slack.com/oauth/v2/authorize",
		TokenURL:                   "https://slack.com/api/oauth.v2.access",
		RevocationURL:              "https://slack.com/api/auth.revoke",
		RevokeStyle:                "slack",
		RevokeAccessKillsGrant:     true,
		RefreshReturnsRefreshToken: true, RefreshRotates: true, OldRefreshDiesOnRotation: true,
		ExpiresIn: true, AccessTokenLifetime: 43200 * time.Second,
		ScopeSeparator: ",", ScopeField: "scope",
		ResponseFields:    []string{"team.id", "team.name", "enterprise.id", "authed_user.id", "bot_user_id", "app_id"},
		DeadGrantErrors:   []string{"invalid_refresh_token", "invalid_code"},
		DeadGrantStatus:   200,
		ClientAuth:        []string{"client_secret_basic", "client_secret_post"},
		TokenRequestBody:  "form",
		ErrorsWithHTTP200: true,
		RateLimit:         "429 with Retry-After, body {ok:false,error:ratelimited}",
		PKCE:              "S256",
		Notes: []string{
			"token rotation must be enabled on the app; without it tokens never expire and there is no refresh token",
			"every answer has ok true/false; errors: invalid_client_id, bad_client_secret, invalid_code, bad_redirect_uri, invalid_grant_type, invalid_refresh_token",
			"auth.revoke: token as Bearer or token param, answers {ok:true, revoked:true}",
			"assumed: revoking a rotated access token ends the installation's refresh token",
		},
	},
	{
		Name:                       "atlassian",
		AuthorizationURL:           "https://auth.atlassian.com/authorize",
		TokenURL:                   "https://auth.atlassian.com/oauth/token",
		RevokeStyle:                "none",
		RefreshReturnsRefreshToken: true, RefreshRotates: true, OldRefreshDiesOnRotation: true,
		ExpiresIn: true, AccessTokenLifetime: time.Hour,
		AuthParams:     map[string]string{"audience": "api.atlassian.com", "prompt": "consent"},
		DefaultScopes:  []string{"offline_access"},
		ScopeSeparator: " ", ScopeField: "scope",
		DeadGrantErrors:  []string{"invalid_grant"},
		DeadGrantStatus:  403,
		ClientAuth:       []string{"client_secret_post"},
		TokenRequestBody: "json",
		RateLimit:        "assumed: 429 with Retry-After",
		PKCE:             "",
		Notes: []string{
			"refresh tokens rotate; 90 days inactivity expiry, 365 days absolute",
			"dead refresh token: 403 invalid_grant \"Unknown or invalid refresh token.\"",
			"cloud id from GET https://api.atlassian.com/oauth/token/accessible-resources (Bearer)",
			"assumed: form-encoded token requests are accepted too",
		},
	},
	{
		Name:                       "salesforce",
		AuthorizationURL:           "https://login.salesforce.com/services/oauth2/authorize",
		TokenURL:                   "https://login.salesforce.com/services/oauth2/token",
		RevocationURL:              "https://login.salesforce.com/services/oauth2/revoke",
		IntrospectionURL:           "https://login.salesforce.com/services/oauth2/introspect",
		Issuer:                     "https://login.salesforce.com",
		RevokeStyle:                "rfc7009",
		RevokeAccessKillsGrant:     false,
		RefreshReturnsRefreshToken: false, RefreshRotates: false,
		ExpiresIn:           false,
		AccessTokenLifetime: 2 * time.Hour, DefaultTokenTTL: 2 * time.Hour,
		DefaultScopes:  []string{"refresh_token", "api"},
		ScopeSeparator: " ", ScopeField: "scope",
		ResponseFields:   []string{"instance_url", "id", "issued_at"},
		DeadGrantErrors:  []string{"invalid_grant"},
		DeadGrantStatus:  400,
		ClientAuth:       []string{"client_secret_post", "client_secret_basic"},
		TokenRequestBody: "form",
		RateLimit:        "assumed",
		PKCE:             "S256",
		Notes: []string{
			"no expires_in: lifetime is the session timeout (2 h default, assumed)",
			"refresh token rotation is a connected-app option: then each refresh returns a new refresh token and the old one is invalidated",
			"revoking a refresh token revokes its access tokens; revoking an access token revokes only it",
			"use the org's My Domain (https://MyDomain.my.salesforce.com) in production",
		},
	},
	{
		Name:                       "bitbucket",
		AuthorizationURL:           "https://bitbucket.org/site/oauth2/authorize",
		TokenURL:                   "https://bitbucket.org/site/oauth2/access_token",
		RevokeStyle:                "none",
		RefreshReturnsRefreshToken: true, RefreshRotates: false,
		ExpiresIn: true, AccessTokenLifetime: 2 * time.Hour,
		ScopeSeparator: " ", ScopeField: "scopes",
		DeadGrantErrors:  []string{"invalid_grant"},
		DeadGrantStatus:  400,
		ClientAuth:       []string{"client_secret_basic"},
		TokenRequestBody: "form",
		RateLimit:        "assumed: 429",
		PKCE:             "",
		Notes: []string{
			"granted scopes are in \"scopes\" (not \"scope\"): a client reading scope sees none returned",
			"responses carry state = the grant type used",
			"assumed: refresh returns the same refresh token",
			"scopes come from the consumer's permissions, not from the authorization request",
		},
	},
}
