package backend

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

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
		"response_mode": {
			Type:          framework.TypeString,
			Description:   "How the provider returns the authorization response to callback: query (default) or form_post (OAuth 2.0 Form Post Response Mode), which keeps the authorization code out of the request URI Vault's audit log records.",
			Default:       responseModeQuery,
			AllowedValues: []any{responseModeQuery, responseModeFormPost},
		},
		"allowed_audiences": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Audiences and resources (RFC 8693, RFC 8707) that token_exchange roles may request from this provider; empty allows none.",
		},
		"preset": {
			Type:          framework.TypeString,
			Description:   "A well-known provider whose endpoints and behaviour fill every field this write does not set: " + strings.Join(presetNames(), ", ") + ". See docs/providers/.",
			AllowedValues: presetValues(),
		},
		"tenant": {
			Type:        framework.TypeString,
			Description: "Directory (tenant) of preset microsoft: common (default), organizations, consumers, a tenant ID or a domain.",
		},
		"revocation_style": {
			Type:          framework.TypeString,
			Description:   "How the provider revokes tokens: rfc7009 (default), github (DELETE .../applications/{client_id}/token), slack (auth.revoke) or none (leases then end with their token's lifetime).",
			AllowedValues: []any{string(oauthclient.RevokeRFC7009), string(oauthclient.RevokeGitHub), string(oauthclient.RevokeSlack), string(oauthclient.RevokeNone)},
		},
		"auth_params": {
			Type:        framework.TypeKVPairs,
			Description: "Extra authorization request parameters, e.g. access_type=offline (Google) or audience=api.atlassian.com (Atlassian).",
		},
		"default_token_ttl": {
			Type:        framework.TypeDurationSecond,
			Description: "Lifetime of access tokens whose token response has no expires_in (Salesforce, GitHub OAuth apps); 0 leaves their lifetime to the role's ttl.",
		},
		"response_fields": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Non-secret token response fields passed on in creds responses (a dotted path reaches into objects: team.id is returned as team_id). Fields that may carry credentials are refused.",
		},
		"invalid_grant_errors": {
			Type:        framework.TypeCommaStringSlice,
			Description: "The provider's own error codes that mean the grant is dead, as invalid_grant does (GitHub's bad_refresh_verification_code, Slack's invalid_refresh_token).",
		},
		"scope_delimiter": {
			Type:          framework.TypeString,
			Description:   "How scopes are joined in authorization and token requests: space (RFC 6749, default) or comma (Slack). Scopes in responses are split on both.",
			AllowedValues: []any{scopeDelimiterSpace, scopeDelimiterComma},
		},
		"token_request_format": {
			Type:          framework.TypeString,
			Description:   "How token requests are sent: form (RFC 6749, default) or json (Atlassian documents JSON bodies).",
			AllowedValues: []any{tokenRequestForm, tokenRequestJSON},
		},
		"rebind_grants": {
			Type:        framework.TypeBool,
			Description: "On update: accept a change of issuer, token_url, revocation_url, introspection_url or ca_pem while grants depend on the provider, and mark every such grant invalid (re-authorization needed).",
		},
		"force": {
			Type:        framework.TypeBool,
			Description: "On delete: revoke and erase the provider's grants first (as far as the provider answers), then delete it.",
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
				logical.DeleteOperation: forwarded(b.pathProviderDelete),
			},
			HelpSynopsis:    "An upstream authorization server and this Vault's client registration there.",
			HelpDescription: providersHelp,
		},
	}
}

func (b *backend) providerExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	p, err := getProvider(ctx, req.Storage, d.Get("name").(string))
	return p != nil, err
}

func (b *backend) pathProvidersList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := listProviders(ctx, req.Storage)
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
	return &logical.Response{Data: providerData(p)}, nil
}

// providerData is a provider's public view: every field but the secrets.
func providerData(p *providerEntry) map[string]any {
	ep := p.endpoints()
	return map[string]any{
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
		"timeout":                  int64(p.Timeout.Seconds()),
		"allowed_audiences":        nonNil(p.AllowedAudiences),
		"response_mode":            p.responseMode(),
		"preset":                   p.Preset,
		"preset_fields":            nonNil(p.PresetFields),
		"tenant":                   p.Tenant,
		"revocation_style":         string(p.revocationStyle()),
		"auth_params":              nonNilMap(p.AuthParams),
		"default_token_ttl":        int64(p.DefaultTokenTTL.Seconds()),
		"response_fields":          nonNil(p.ResponseFields),
		"invalid_grant_errors":     nonNil(p.InvalidGrantErrors),
		"scope_delimiter":          p.scopeDelimiter(),
		"token_request_format":     p.tokenRequestFormat(),
	}
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func presetValues() []any {
	var v []any
	for _, n := range presetNames() {
		v = append(v, n)
	}
	return v
}

func (b *backend) pathProviderWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	unlock := b.lockProvider(name)
	defer unlock()
	p, err := getProvider(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	oldBinding := ""
	if p == nil {
		if req.Operation == logical.UpdateOperation {
			return logical.ErrorResponse("provider %q does not exist", name), nil
		}
		p = &providerEntry{Name: name, ClientAuth: string(oauthclient.ClientSecretBasic), RevocationCascades: true}
	} else {
		oldBinding = p.binding()
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
			p.Discovered, p.IssRequired = oauthclient.Endpoints{}, false
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
	if v, ok := d.GetOk("response_mode"); ok {
		p.ResponseMode = v.(string)
	}
	if v, ok := d.GetOk("allowed_audiences"); ok {
		p.AllowedAudiences = normalizeScopes(v.([]string))
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
	if resp := applyBehaviourFields(p, d); resp != nil {
		return resp, nil
	}

	if err := b.discover(ctx, req.Storage, p, rediscover); err != nil {
		return respondBadInput(err)
	}
	if p.endpoints().Token == "" {
		return logical.ErrorResponse("token_url is required when issuer discovery does not provide one"), nil
	}
	if p.revocationStyle() == oauthclient.RevokeGitHub && p.endpoints().Revocation != "" && !strings.HasSuffix(p.endpoints().Revocation, "/token") {
		return logical.ErrorResponse("revocation_url: revocation_style github needs GitHub's .../applications/{client_id}/token URL"), nil
	}

	secret, secretSet := d.GetOk("client_secret")
	privateKey, keySet := d.GetOk("client_private_key")
	if keySet && privateKey.(string) != "" {
		if _, err := oauthclient.ParsePrivateKey(privateKey.(string)); err != nil {
			return logical.ErrorResponse("client_private_key: %s", err), nil
		}
	}
	hasSecret := (secretSet && secret.(string) != "") || (!secretSet && !p.ClientSecret.isZero())
	hasKey := (keySet && privateKey.(string) != "") || (!keySet && !p.ClientPrivateKey.isZero())
	switch oauthclient.AuthMethod(p.ClientAuth) {
	case oauthclient.ClientSecretBasic, oauthclient.ClientSecretPost:
		if !hasSecret {
			return logical.ErrorResponse("client_secret is required when client_auth is %s", p.ClientAuth), nil
		}
	case oauthclient.PrivateKeyJWT:
		if !hasKey {
			return logical.ErrorResponse("client_private_key is required when client_auth is private_key_jwt"), nil
		}
	}

	secrets := providerSecrets{}
	if secretSet {
		v := secret.(string)
		secrets.clientSecret = &v
	}
	if keySet {
		v := privateKey.(string)
		secrets.privateKey = &v
	}
	rebound, err := b.storeProvider(ctx, req.Storage, p, oldBinding, secrets, d.Get("rebind_grants").(bool))
	if err != nil {
		return respondBadInput(err)
	}
	resp := &logical.Response{Data: providerData(p)}
	if len(rebound) > 0 {
		resp.Warnings = append(resp.Warnings, fmt.Sprintf("provider %q now sends refresh tokens elsewhere: grant(s) marked invalid and need re-authorization: %s", name, namesList(rebound)))
	}
	return resp, nil
}

func (b *backend) pathProviderDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	ctx = detached(ctx)
	var warnings []string
	if d.Get("force").(bool) {
		warnings = b.revokeGrantsOfProvider(ctx, req.Storage, name)
	}
	unlock := b.lockProvider(name)
	defer unlock()
	users, err := b.providerUsers(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if len(users) > 0 {
		return logical.ErrorResponse("provider %q is still used by %s: deleting it would leave their tokens unrevocable; delete those first, or pass force=true to revoke and erase its grants first",
			name, namesList(users)), nil
	}
	if err := deleteProvider(ctx, req.Storage, name); err != nil {
		return nil, err
	}
	b.dropCaches(providerPath(name))
	return &logical.Response{Warnings: warnings}, nil
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

// applyBehaviourFields sets the preset and the fields that say how the
// provider departs from the RFCs, then fills from the preset what the
// operator has not set. A non-nil response is a refusal.
func applyBehaviourFields(p *providerEntry, d *framework.FieldData) *logical.Response {
	inRequest := func(field string) bool { _, ok := d.Raw[field]; return ok }
	if v, ok := d.GetOk("tenant"); ok {
		p.Tenant = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("revocation_style"); ok {
		p.RevocationStyle = v.(string)
	}
	if v, ok := d.GetOk("auth_params"); ok {
		params := v.(map[string]string)
		for k := range params {
			if reservedAuthParams[k] {
				return logical.ErrorResponse("auth_params: %q is set by the engine and cannot be overridden", k)
			}
		}
		p.AuthParams = params
	}
	if v, ok := d.GetOk("default_token_ttl"); ok {
		p.DefaultTokenTTL = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("response_fields"); ok {
		fields := normalizeScopes(v.([]string))
		for _, f := range fields {
			if !responseFieldName.MatchString(f) {
				return logical.ErrorResponse("response_fields: %q is not a field name or dotted path", f)
			}
			if oauthclient.SecretField(f) {
				return logical.ErrorResponse("response_fields: %q may carry a credential and is never passed on", f)
			}
			if reservedCredsFields[strings.ReplaceAll(f, ".", "_")] {
				return logical.ErrorResponse("response_fields: %q would hide the creds field of the same name", f)
			}
		}
		p.ResponseFields = fields
	}
	if v, ok := d.GetOk("scope_delimiter"); ok {
		p.ScopeDelimiter = v.(string)
	}
	if v, ok := d.GetOk("token_request_format"); ok {
		p.TokenRequestFormat = v.(string)
	}
	if v, ok := d.GetOk("invalid_grant_errors"); ok {
		codes := normalizeScopes(v.([]string))
		for _, c := range codes {
			if !errorCodeName.MatchString(c) {
				return logical.ErrorResponse("invalid_grant_errors: %q is not an error code", c)
			}
		}
		p.InvalidGrantErrors = codes
	}

	presetGiven := inRequest("preset")
	if presetGiven {
		p.Preset = d.Get("preset").(string)
	}
	if p.Preset == "" {
		if p.Tenant != "" {
			return logical.ErrorResponse("tenant: only a preset with a tenant uses it (microsoft)")
		}
		return nil
	}
	ps, _ := presetNamed(p.Preset)
	if p.Tenant != "" && ps.tenant == "" {
		return logical.ErrorResponse("tenant: preset %s has no tenant", p.Preset)
	}
	if p.Tenant != "" && !tenantName.MatchString(p.Tenant) {
		return logical.ErrorResponse("tenant: %q is not a tenant name, ID or domain", p.Tenant)
	}
	// A field the operator set, now or under this preset before, stays.
	fromPreset := p.PresetFields
	p.PresetFields = applyPreset(p, ps, func(field string) bool {
		return inRequest(field) || (!presetGiven && !slices.Contains(fromPreset, field))
	})
	return nil
}

var (
	responseFieldName = regexp.MustCompile(`^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$`)
	errorCodeName     = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)
	tenantName        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)
)
