package backend

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
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

// canRevoke reports whether an access token of this provider can be revoked
// at lease end; tokenFromGrant says whether it came from a refresh token
// (then a cascading server would kill the grant with it).
func (p *providerEntry) canRevoke(tokenFromGrant bool) bool {
	if p.endpoints().Revocation == "" {
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

func pathProviders(b *backend) []*framework.Path {
	fields := map[string]*framework.FieldSchema{
		"name": {
			Type:        framework.TypeLowerCaseString,
			Description: "Name of the provider.",
			Required:    true,
		},
		"issuer": {
			Type:        framework.TypeString,
			Description: "Issuer URL; endpoints are discovered from RFC 8414 metadata, then OpenID Connect discovery.",
		},
		"client_id": {
			Type:        framework.TypeString,
			Description: "This Vault's client ID at the provider.",
		},
		"client_secret": {
			Type:         framework.TypeString,
			Description:  "Client secret (write-only).",
			DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
		},
		"client_auth": {
			Type:          framework.TypeString,
			Description:   "Client authentication: client_secret_basic, client_secret_post, private_key_jwt or none.",
			Default:       string(oauthclient.ClientSecretBasic),
			AllowedValues: []any{"client_secret_basic", "client_secret_post", "private_key_jwt", "none"},
		},
		"client_private_key": {
			Type:         framework.TypeString,
			Description:  "PEM private key for private_key_jwt (write-only).",
			DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
		},
		"client_key_id": {
			Type:        framework.TypeString,
			Description: "Key ID (kid) put in private_key_jwt client assertions.",
		},
		"scopes": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Default scopes requested at authorization.",
		},
		"token_params": {
			Type:        framework.TypeKVPairs,
			Description: "Extra form parameters sent to the token endpoint.",
		},
		"revocation_cascades": {
			Type:        framework.TypeBool,
			Description: "Whether revoking an access token at this server also revokes its grant's refresh token.",
			Default:     true,
		},
		"ca_pem": {
			Type:        framework.TypeString,
			Description: "PEM CA certificates to trust instead of the system roots.",
		},
		"timeout": {
			Type:        framework.TypeDurationSecond,
			Description: "Timeout of each call to this provider; defaults to the mount's upstream_timeout.",
		},
	}
	for _, f := range endpointFields {
		fields[f.field] = &framework.FieldSchema{
			Type:        framework.TypeString,
			Description: fmt.Sprintf("Explicit %s; overrides discovery.", strings.ReplaceAll(f.field, "_", " ")),
		}
	}
	return []*framework.Path{
		{
			Pattern: "providers/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "providers",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathProvidersList},
			},
			HelpSynopsis:    "List providers.",
			HelpDescription: providersHelp,
		},
		{
			Pattern: "providers/" + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "provider",
			},
			Fields:         fields,
			ExistenceCheck: b.providerExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				// Writes run discovery upstream before storing.
				logical.CreateOperation: forwarded(b.pathProviderWrite),
				logical.UpdateOperation: forwarded(b.pathProviderWrite),
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathProviderRead},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathProviderDelete},
			},
			HelpSynopsis:    "An upstream authorization server and this Vault's client registration there.",
			HelpDescription: providersHelp,
		},
	}
}

func getProvider(ctx context.Context, s logical.Storage, name string) (*providerEntry, error) {
	p := &providerEntry{}
	ok, err := getJSON(ctx, s, providerPrefix+name, p)
	if err != nil {
		return nil, fmt.Errorf("reading provider %q: %w", name, err)
	}
	if !ok {
		return nil, nil
	}
	return p, nil
}

func (b *backend) providerExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	p, err := getProvider(ctx, req.Storage, d.Get("name").(string))
	return p != nil, err
}

func (b *backend) pathProvidersList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, providerPrefix)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathProviderRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	p, err := getProvider(ctx, req.Storage, d.Get("name").(string))
	if err != nil || p == nil {
		return nil, err
	}
	ep := p.endpoints()
	timeout := int64(0)
	if p.Timeout > 0 {
		timeout = int64(p.Timeout.Seconds())
	}
	return &logical.Response{Data: map[string]any{
		"issuer":                   p.Issuer,
		"token_url":                ep.Token,
		"authorization_url":        ep.Authorization,
		"revocation_url":           ep.Revocation,
		"introspection_url":        ep.Introspection,
		"device_authorization_url": ep.DeviceAuthorization,
		"client_id":                p.ClientID,
		"client_auth":              p.ClientAuth,
		"client_secret_set":        !p.ClientSecret.isZero(),
		"client_private_key_set":   !p.ClientPrivateKey.isZero(),
		"client_key_id":            p.ClientKeyID,
		"scopes":                   nonNil(p.Scopes),
		"token_params":             p.TokenParams,
		"revocation_cascades":      p.RevocationCascades,
		"ca_pem":                   p.CAPEM,
		"timeout":                  timeout,
	}}, nil
}

func (b *backend) pathProviderWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	p, err := getProvider(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if p == nil {
		if req.Operation == logical.UpdateOperation {
			return logical.ErrorResponse("provider %q does not exist", name), nil
		}
		p = &providerEntry{Name: name, ClientAuth: string(oauthclient.ClientSecretBasic), RevocationCascades: true}
	}

	rediscover := false
	if v, ok := d.GetOk("issuer"); ok {
		issuer := strings.TrimSuffix(strings.TrimSpace(v.(string)), "/")
		if issuer != "" {
			if err := oauthclient.CheckEndpointURL(issuer); err != nil {
				return logical.ErrorResponse("issuer: %s", err), nil
			}
		}
		rediscover = issuer != ""
		p.Issuer = issuer
		if issuer == "" {
			p.Discovered = oauthclient.Endpoints{}
		}
	}
	for _, f := range endpointFields {
		if v, ok := d.GetOk(f.field); ok {
			u := strings.TrimSpace(v.(string))
			if u != "" {
				if err := oauthclient.CheckEndpointURL(u); err != nil {
					return logical.ErrorResponse("%s: %s", f.field, err), nil
				}
			}
			*f.ptr(&p.Explicit) = u
		}
	}
	if v, ok := d.GetOk("client_id"); ok {
		p.ClientID = strings.TrimSpace(v.(string))
	}
	if p.ClientID == "" {
		return logical.ErrorResponse("client_id is required"), nil
	}
	if v, ok := d.GetOk("client_auth"); ok {
		p.ClientAuth = v.(string)
	}
	if v, ok := d.GetOk("client_key_id"); ok {
		p.ClientKeyID = v.(string)
	}
	if v, ok := d.GetOk("scopes"); ok {
		p.Scopes = normalizeScopes(v.([]string))
	}
	if v, ok := d.GetOk("token_params"); ok {
		params := v.(map[string]string)
		for k := range params {
			if reservedTokenParams[k] {
				return logical.ErrorResponse("token_params: %q is set by the engine and cannot be overridden", k), nil
			}
		}
		p.TokenParams = params
	}
	if v, ok := d.GetOk("revocation_cascades"); ok {
		p.RevocationCascades = v.(bool)
	}
	if v, ok := d.GetOk("ca_pem"); ok {
		p.CAPEM = v.(string)
	}
	if v, ok := d.GetOk("timeout"); ok {
		if v.(int) < 0 {
			return logical.ErrorResponse("timeout must not be negative"), nil
		}
		p.Timeout = time.Duration(v.(int)) * time.Second
	}

	cfg, err := b.mountConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	httpClient, err := oauthclient.NewHTTPClient(p.CAPEM, p.timeout(cfg))
	if err != nil {
		return logical.ErrorResponse("ca_pem: %s", err), nil
	}
	if rediscover && p.Issuer != "" {
		md, err := oauthclient.Discover(ctx, httpClient, p.Issuer)
		if err != nil {
			return logical.ErrorResponse("issuer: discovery failed: %s", err), nil
		}
		discovered := md.Endpoints()
		for _, f := range endpointFields {
			if u := *f.ptr(&discovered); u != "" {
				if err := oauthclient.CheckEndpointURL(u); err != nil {
					return logical.ErrorResponse("issuer: discovered %s %q: %s", f.field, u, err), nil
				}
			}
		}
		p.Discovered = discovered
	}
	if p.endpoints().Token == "" {
		return logical.ErrorResponse("token_url is required when issuer discovery does not provide one"), nil
	}

	kr, err := b.sealingKeys(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if v, ok := d.GetOk("client_secret"); ok {
		if p.ClientSecret, err = sealOptional(kr, v.(string), providerAAD(name, "client_secret")); err != nil {
			return nil, err
		}
	}
	if v, ok := d.GetOk("client_private_key"); ok {
		pemText := v.(string)
		if pemText != "" {
			if _, err := oauthclient.ParsePrivateKey(pemText); err != nil {
				return logical.ErrorResponse("client_private_key: %s", err), nil
			}
		}
		if p.ClientPrivateKey, err = sealOptional(kr, pemText, providerAAD(name, "client_private_key")); err != nil {
			return nil, err
		}
	}
	switch oauthclient.AuthMethod(p.ClientAuth) {
	case oauthclient.ClientSecretBasic, oauthclient.ClientSecretPost:
		if p.ClientSecret.isZero() {
			return logical.ErrorResponse("client_secret is required when client_auth is %s", p.ClientAuth), nil
		}
	case oauthclient.PrivateKeyJWT:
		if p.ClientPrivateKey.isZero() {
			return logical.ErrorResponse("client_private_key is required when client_auth is private_key_jwt"), nil
		}
	}

	if err := putJSON(ctx, req.Storage, providerPrefix+name, p); err != nil {
		return nil, err
	}
	b.dropProvider(name)
	return nil, nil
}

func (p *providerEntry) timeout(cfg *configEntry) time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return cfg.UpstreamTimeout
}

func sealOptional(kr *keyring, value, aad string) (*sealed, error) {
	if value == "" {
		return nil, nil
	}
	return kr.seal(value, aad)
}

func (b *backend) pathProviderDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	users, err := b.providerUsers(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if len(users) > 0 {
		return logical.ErrorResponse("provider %q is still used by %s; delete those first", name, strings.Join(users, ", ")), nil
	}
	if err := req.Storage.Delete(ctx, providerPrefix+name); err != nil {
		return nil, err
	}
	b.dropProvider(name)
	return nil, nil
}

// providerUsers names (up to a few) roles and grants that use the provider:
// deleting it would strand their refresh tokens unrevoked.
func (b *backend) providerUsers(ctx context.Context, s logical.Storage, name string) ([]string, error) {
	const most = 5
	var users []string
	roles, err := s.List(ctx, rolePrefix)
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
	grants, err := s.List(ctx, grantPrefix)
	if err != nil {
		return nil, err
	}
	for _, g := range grants {
		if len(users) >= most {
			break
		}
		grant, err := getGrant(ctx, s, g)
		if err != nil {
			return nil, err
		}
		if grant != nil && grant.Provider == name {
			users = append(users, "grant "+g)
		}
	}
	sort.Strings(users)
	return users, nil
}

// providerHandle is a provider with its ready-to-use protocol client.
type providerHandle struct {
	entry  *providerEntry
	client *oauthclient.Client
}

func (b *backend) dropProvider(name string) {
	b.cacheMu.Lock()
	delete(b.providers, name)
	b.cacheMu.Unlock()
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
		Endpoints:   p.endpoints(),
		ClientID:    p.ClientID,
		AuthMethod:  oauthclient.AuthMethod(p.ClientAuth),
		KeyID:       p.ClientKeyID,
		HTTPClient:  httpClient,
		TokenParams: url.Values{},
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

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

const providersHelp = `
A provider is one upstream OAuth 2.0 authorization server and this Vault's
client registration there. Endpoints come from discovery (issuer) or are set
explicitly (token_url, revocation_url, ...); explicit URLs win. URLs must be
https, or http on loopback hosts; redirects are never followed and link-local
addresses are refused. client_secret and client_private_key are write-only:
reads return client_secret_set and client_private_key_set instead.

revocation_cascades (default true) says whether revoking an access token
also kills its grant's refresh token at this server; then leases of
refresh_token roles end by expiry only, to keep the grant alive.
`
