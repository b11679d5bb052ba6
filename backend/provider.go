package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

// providerEntry is one authorization server and this Vault's client
// registration there.
type providerEntry struct {
	Name   string `json:"name"`
	Issuer string `json:"issuer,omitempty"`
	// Explicit endpoints; each overrides the discovered one.
	Explicit   oauthclient.Endpoints `json:"explicit"`
	Discovered oauthclient.Endpoints `json:"discovered"`

	ClientID           string            `json:"client_id"`
	ClientAuth         string            `json:"client_auth"`
	ClientSecret       *sealed           `json:"client_secret,omitempty"`
	ClientPrivateKey   *sealed           `json:"client_private_key,omitempty"`
	ClientKeyID        string            `json:"client_key_id,omitempty"`
	Scopes             []string          `json:"scopes,omitempty"`
	TokenParams        map[string]string `json:"token_params,omitempty"`
	RevocationCascades bool              `json:"revocation_cascades"`
	CAPEM              string            `json:"ca_pem,omitempty"`
	Timeout            time.Duration     `json:"timeout,omitempty"`
	// IssRequired: discovery said the server always sends iss in
	// authorization responses (RFC 9207), so callback requires it.
	IssRequired bool `json:"iss_required,omitempty"`
	// ResponseMode is how the authorization response comes back: "query"
	// (the default) or "form_post", which keeps the code out of the request
	// URI that Vault's audit log records.
	ResponseMode string `json:"response_mode,omitempty"`
	// AllowedAudiences are the audiences and resources token_exchange
	// roles may ask for; empty allows none.
	AllowedAudiences []string `json:"allowed_audiences,omitempty"`

	// Preset names the well-known provider (presets.go) whose values fill
	// the fields listed in PresetFields.
	Preset       string   `json:"preset,omitempty"`
	PresetFields []string `json:"preset_fields,omitempty"`
	// Tenant fills {tenant} in a preset's endpoints (Microsoft Entra ID).
	Tenant string `json:"tenant,omitempty"`
	// RevocationStyle is how the provider revokes (oauthclient); "" is
	// RFC 7009.
	RevocationStyle string `json:"revocation_style,omitempty"`
	// AuthParams are extra authorization request parameters (Google's
	// access_type=offline).
	AuthParams map[string]string `json:"auth_params,omitempty"`
	// DefaultTokenTTL is the lifetime of access tokens whose response has
	// no expires_in.
	DefaultTokenTTL time.Duration `json:"default_token_ttl,omitempty"`
	// ResponseFields are the non-secret token response fields passed on in
	// creds responses.
	ResponseFields []string `json:"response_fields,omitempty"`
	// InvalidGrantErrors are the provider's own error codes that mean the
	// grant is dead, as invalid_grant does.
	InvalidGrantErrors []string `json:"invalid_grant_errors,omitempty"`
	// ScopeDelimiter is how scopes are joined in requests: "space" (""),
	// or "comma" (Slack).
	ScopeDelimiter string `json:"scope_delimiter,omitempty"`
	// TokenRequestFormat is "form" ("") or "json" (Atlassian).
	TokenRequestFormat string `json:"token_request_format,omitempty"`
}

// Values of scope_delimiter and token_request_format.
const (
	scopeDelimiterSpace = "space"
	scopeDelimiterComma = "comma"
	tokenRequestForm    = "form"
	tokenRequestJSON    = "json"
)

func (p *providerEntry) scopeDelimiter() string {
	if p.ScopeDelimiter == "" {
		return scopeDelimiterSpace
	}
	return p.ScopeDelimiter
}

func (p *providerEntry) tokenRequestFormat() string {
	if p.TokenRequestFormat == "" {
		return tokenRequestForm
	}
	return p.TokenRequestFormat
}

func (p *providerEntry) revocationStyle() oauthclient.RevocationStyle {
	if p.RevocationStyle == "" {
		return oauthclient.RevokeRFC7009
	}
	return oauthclient.RevocationStyle(p.RevocationStyle)
}

// endpoints merges explicit endpoints over discovered ones.
func (p *providerEntry) endpoints() oauthclient.Endpoints {
	pick := func(explicit, discovered string) string {
		if explicit != "" {
			return explicit
		}
		return discovered
	}
	e, d := p.Explicit, p.Discovered
	return oauthclient.Endpoints{
		Issuer:              p.Issuer,
		Authorization:       pick(e.Authorization, d.Authorization),
		Token:               pick(e.Token, d.Token),
		Revocation:          pick(e.Revocation, d.Revocation),
		Introspection:       pick(e.Introspection, d.Introspection),
		DeviceAuthorization: pick(e.DeviceAuthorization, d.DeviceAuthorization),
	}
}

// How the authorization response comes back to callback.
const (
	responseModeQuery    = "query"
	responseModeFormPost = "form_post"
)

func (p *providerEntry) responseMode() string {
	if p.ResponseMode == "" {
		return responseModeQuery
	}
	return p.ResponseMode
}

// authParams are the extra authorization request parameters.
func (p *providerEntry) authParams() map[string]string {
	params := make(map[string]string, len(p.AuthParams)+1)
	for k, v := range p.AuthParams {
		params[k] = v
	}
	if p.responseMode() == responseModeFormPost {
		params["response_mode"] = responseModeFormPost
	}
	return params
}

// canRevoke reports whether an access token of this provider can be revoked
// at lease end; tokenFromGrant says whether it came from a refresh token
// (then a cascading server would kill the grant with it).
func (p *providerEntry) canRevoke(tokenFromGrant bool) bool {
	if p.endpoints().Revocation == "" || p.revocationStyle() == oauthclient.RevokeNone {
		return false
	}
	return !(tokenFromGrant && p.RevocationCascades)
}

// endpointFields maps request fields to the endpoint they set.
var endpointFields = []struct {
	field string
	ptr   func(*oauthclient.Endpoints) *string
}{
	{"token_url", func(e *oauthclient.Endpoints) *string { return &e.Token }},
	{"authorization_url", func(e *oauthclient.Endpoints) *string { return &e.Authorization }},
	{"revocation_url", func(e *oauthclient.Endpoints) *string { return &e.Revocation }},
	{"introspection_url", func(e *oauthclient.Endpoints) *string { return &e.Introspection }},
	{"device_authorization_url", func(e *oauthclient.Endpoints) *string { return &e.DeviceAuthorization }},
}

// reservedTokenParams may not be set through token_params: they carry the
// grant itself or the client's credentials.
var reservedTokenParams = map[string]bool{
	"grant_type": true, "refresh_token": true, "code": true, "code_verifier": true,
	"redirect_uri": true, "client_id": true, "client_secret": true, "client_assertion": true,
	"client_assertion_type": true, "device_code": true, "subject_token": true, "subject_token_type": true,
	"scope": true, "username": true, "password": true,
}

// reservedAuthParams may not be set through auth_params: the engine sets
// them to run the flow safely (state, PKCE, the redirect).
var reservedAuthParams = map[string]bool{
	"response_type": true, "client_id": true, "redirect_uri": true, "scope": true, "state": true,
	"code_challenge": true, "code_challenge_method": true, "response_mode": true, "nonce": true,
	"client_secret": true, "request": true, "request_uri": true,
}

func (p *providerEntry) timeout(cfg *configEntry) time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return cfg.UpstreamTimeout
}

func (b *backend) lockProvider(name string) (unlock func()) {
	return b.recordLocks.Lock(providerPath(name))
}

// binding identifies where a grant's refresh token may be sent: the
// issuer, the token, revocation and introspection endpoints, and the CA
// that verifies them. A grant records the binding it was authorized
// under and is never refreshed or revoked under another.
func (p *providerEntry) binding() string {
	ep := p.endpoints()
	sum := sha256.Sum256([]byte(strings.Join([]string{
		ep.Issuer, ep.Token, ep.Revocation, ep.Introspection, strings.TrimSpace(p.CAPEM),
	}, "\x00")))
	return hex.EncodeToString(sum[:16])
}

// discover fills p's discovered endpoints from its issuer (RFC 8414, then
// OpenID Connect discovery) when rediscover says the issuer was written.
// Its errors are bad input about issuer or ca_pem.
func (b *backend) discover(ctx context.Context, s logical.Storage, p *providerEntry, rediscover bool) error {
	cfg, err := b.mountConfig(ctx, s)
	if err != nil {
		return err
	}
	httpClient, err := oauthclient.NewHTTPClient(p.CAPEM, p.timeout(cfg))
	if err != nil {
		return badInputf("ca_pem: %s", err)
	}
	if !rediscover || p.Issuer == "" {
		return nil
	}
	md, err := oauthclient.Discover(ctx, httpClient, p.Issuer)
	if err != nil {
		return badInputf("issuer: discovery failed: %s", err)
	}
	discovered := md.Endpoints()
	for _, f := range endpointFields {
		if u := *f.ptr(&discovered); u != "" {
			if err := oauthclient.CheckEndpointURL(u); err != nil {
				return badInputf("issuer: discovered %s %q: %s", f.field, u, err)
			}
		}
	}
	p.Discovered = discovered
	p.IssRequired = md.IssParameterSupported
	return nil
}

// providerSecrets are the write-only values of a provider write; nil
// leaves a value as it is, "" clears it.
type providerSecrets struct {
	clientSecret, privateKey *string
}

// storeProvider seals p's new secrets and stores it. A grant's refresh
// token goes only where it was authorized: when p's binding moved away
// from oldBinding under existing grants, the write is refused (bad input)
// unless rebind, and then those grants are marked invalid; it returns them.
// The caller holds the provider's lock.
func (b *backend) storeProvider(ctx context.Context, s logical.Storage, p *providerEntry, oldBinding string, secrets providerSecrets, rebind bool) ([]string, error) {
	var rebound []string
	if oldBinding != "" && p.binding() != oldBinding {
		var err error
		if rebound, err = b.grantsOfProvider(ctx, s, p.Name); err != nil {
			return nil, err
		}
		if len(rebound) > 0 && !rebind {
			return nil, badInputf("issuer, token_url, revocation_url, introspection_url, ca_pem: changing where provider %q sends refresh tokens would send those of its grants (%s) to endpoints they were not authorized against; pass rebind_grants=true to accept the change and mark those grants invalid (re-authorization needed)",
				p.Name, namesList(rebound))
		}
	}
	err := b.storeSealed(ctx, s, providerPath(p.Name), p, func(kr *keyring) (err error) {
		if secrets.clientSecret != nil {
			if p.ClientSecret, err = kr.sealOptional(*secrets.clientSecret, providerAAD(p.Name, "client_secret")); err != nil {
				return err
			}
		}
		if secrets.privateKey != nil {
			p.ClientPrivateKey, err = kr.sealOptional(*secrets.privateKey, providerAAD(p.Name, "client_private_key"))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	b.dropCaches(providerPath(p.Name))
	b.invalidateRebound(ctx, s, p.Name, rebound)
	return rebound, nil
}

// providerUsers names the roles, grants and shared tokens that use the
// provider: deleting it would strand their tokens unrevoked.
func (b *backend) providerUsers(ctx context.Context, s logical.Storage, name string) ([]string, error) {
	var users []string
	roles, err := listRoles(ctx, s)
	if err != nil {
		return nil, err
	}
	for _, r := range roles {
		role, err := getRole(ctx, s, r)
		if err != nil {
			return nil, err
		}
		if role != nil && role.Provider == name {
			users = append(users, "role "+r)
		}
	}
	grants, err := b.grantsOfProvider(ctx, s, name)
	if err != nil {
		return nil, err
	}
	for _, g := range grants {
		users = append(users, "grant "+g)
	}
	if ids, err := s.List(ctx, outstandingDir(providerOwner(name))); err != nil {
		return nil, err
	} else if len(ids) > 0 {
		users = append(users, fmt.Sprintf("%d client_credentials lease(s)", len(ids)))
	}
	shared, err := s.List(ctx, sharedTokenPrefix)
	if err != nil {
		return nil, err
	}
	for _, role := range shared {
		tokens, err := getSharedTokens(ctx, s, role)
		if err != nil {
			return nil, err
		}
		for _, t := range tokens.Tokens {
			if t.Provider == name {
				users = append(users, "leases of role "+role)
				break
			}
		}
	}
	sort.Strings(users)
	return users, nil
}

// invalidateRebound marks the named grants of provider invalid after its
// endpoints moved. One it fails to mark is still refused by its binding.
func (b *backend) invalidateRebound(ctx context.Context, s logical.Storage, provider string, grants []string) {
	for _, name := range grants {
		_, err := b.updateGrant(ctx, s, name, func(g *grantEntry) error {
			if g.Provider != provider || g.Status == statusRevoking {
				return errUnchanged
			}
			g.markInvalid(fmt.Sprintf("provider %q was moved to other endpoints (rebind_grants); re-authorization is needed", provider))
			return nil
		})
		if err != nil && !isNoGrant(err) && !errors.Is(err, errUnchanged) {
			b.logger.Error("marking re-bound grant invalid failed; it stays refused by its binding", "grant", name, "error", err)
		}
	}
}

// revokeGrantsOfProvider revokes the access tokens of its client_credentials
// leases and revokes and erases every grant of provider, as far as the
// provider answers (provider delete with force); it returns a warning per
// thing it could not revoke upstream.
func (b *backend) revokeGrantsOfProvider(ctx context.Context, s logical.Storage, provider string) []string {
	grants, err := b.grantsOfProvider(ctx, s, provider)
	if err != nil {
		return []string{fmt.Sprintf("listing the grants of provider %q failed: %s", provider, err)}
	}
	var warnings []string
	if h, err := b.provider(ctx, s, provider); err == nil {
		if err := b.revokeOutstanding(ctx, s, h, providerOwner(provider)); err != nil {
			warnings = append(warnings, fmt.Sprintf("revoking the access tokens of client_credentials leases failed: %s", err))
		}
	}
	for _, name := range grants {
		unlock := b.lockGrant(name)
		g, err := b.loadGrantLocked(ctx, s, name)
		if err == nil && g != nil && g.Provider == provider {
			g.startRevoking()
			if _, rerr := b.revokeGrantUpstream(ctx, s, g); rerr != nil {
				warnings = append(warnings, fmt.Sprintf("grant %q: its refresh token could not be revoked upstream (%s); erased anyway (force)", name, rerr))
				err = b.eraseGrant(ctx, s, g)
			}
		}
		unlock()
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("grant %q: %s", name, err))
		}
	}
	return warnings
}

// namesList shows up to a few names and how many more there are.
func namesList(names []string) string {
	const most = 10
	if len(names) <= most {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:most], ", "), len(names)-most)
}

// providerHandle is a provider with its ready-to-use protocol client.
type providerHandle struct {
	entry  *providerEntry
	client *oauthclient.Client
}

// errUnknownProvider is wrapped by provider when the provider is gone.
var errUnknownProvider = errors.New("unknown provider")

// provider returns the named provider and its client, cached until the
// provider, the config or the sealing keys change.
func (b *backend) provider(ctx context.Context, s logical.Storage, name string) (*providerHandle, error) {
	b.cacheMu.RLock()
	h := b.providers[name]
	b.cacheMu.RUnlock()
	if h != nil {
		return h, nil
	}
	p, err := getProvider(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, fmt.Errorf("%w %q", errUnknownProvider, name)
	}
	cfg, err := b.mountConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	httpClient, err := oauthclient.NewHTTPClient(p.CAPEM, p.timeout(cfg))
	if err != nil {
		return nil, fmt.Errorf("provider %q: ca_pem: %w", name, err)
	}
	oc := oauthclient.Config{
		Endpoints:         p.endpoints(),
		ClientID:          p.ClientID,
		AuthMethod:        oauthclient.AuthMethod(p.ClientAuth),
		KeyID:             p.ClientKeyID,
		HTTPClient:        httpClient,
		TokenParams:       url.Values{},
		Revocation:        p.revocationStyle(),
		DefaultLifetime:   p.DefaultTokenTTL,
		InvalidGrantCodes: p.InvalidGrantErrors,
		ResponseFields:    p.ResponseFields,
		JSONRequests:      p.tokenRequestFormat() == tokenRequestJSON,
		Observe: func(endpoint string, took time.Duration) {
			b.metrics.upstreamLatency.observe(took, name, endpoint)
		},
	}
	if p.scopeDelimiter() == scopeDelimiterComma {
		oc.ScopeDelimiter = ","
	}
	for k, v := range p.TokenParams {
		oc.TokenParams.Set(k, v)
	}
	if !p.ClientSecret.isZero() {
		if oc.ClientSecret, err = kr.open(p.ClientSecret, providerAAD(name, "client_secret")); err != nil {
			return nil, fmt.Errorf("provider %q: client_secret: %w", name, err)
		}
	}
	if !p.ClientPrivateKey.isZero() {
		pemText, err := kr.open(p.ClientPrivateKey, providerAAD(name, "client_private_key"))
		if err != nil {
			return nil, fmt.Errorf("provider %q: client_private_key: %w", name, err)
		}
		if oc.PrivateKey, err = oauthclient.ParsePrivateKey(pemText); err != nil {
			return nil, fmt.Errorf("provider %q: client_private_key: %w", name, err)
		}
	}
	client, err := oauthclient.New(oc)
	if err != nil {
		return nil, fmt.Errorf("provider %q: %w", name, err)
	}
	h = &providerHandle{entry: p, client: client}
	b.cacheMu.Lock()
	b.providers[name] = h
	b.cacheMu.Unlock()
	return h, nil
}
