package backend

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathRoles(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "roles/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "roles",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathRolesList},
			},
			HelpSynopsis:    "List roles.",
			HelpDescription: rolesHelp,
		},
		{
			Pattern: "roles/" + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "role",
			},
			Fields: map[string]*framework.FieldSchema{
				"name": {Type: framework.TypeLowerCaseString, Description: "Name of the role.", Required: true},
				"grant_type": {
					Type:          framework.TypeString,
					Description:   "refresh_token (default), client_credentials or token_exchange.",
					Default:       grantTypeRefreshToken,
					AllowedValues: []any{grantTypeRefreshToken, grantTypeClientCredentials, grantTypeTokenExchange},
				},
				"grant":    {Type: framework.TypeLowerCaseString, Description: "Grant to refresh (refresh_token and token_exchange roles)."},
				"provider": {Type: framework.TypeLowerCaseString, Description: "Provider to ask (client_credentials roles)."},
				"scopes": {
					Type:        framework.TypeCommaStringSlice,
					Description: "Scopes requested on every issue; for refresh_token roles a subset of the grant's scopes.",
				},
				"audience": {Type: framework.TypeCommaStringSlice, Description: "Audiences requested (RFC 8693)."},
				"resource": {Type: framework.TypeCommaStringSlice, Description: "Resource indicators requested (RFC 8707)."},
				"strict_scopes": {
					Type:        framework.TypeBool,
					Description: "Refuse a token that carries more scopes than the role asks for.",
					Default:     true,
				},
				"ttl":     {Type: framework.TypeDurationSecond, Description: "Lease TTL; never more than the upstream token's remaining life."},
				"max_ttl": {Type: framework.TypeDurationSecond, Description: "Longest a lease may be renewed to."},
				"token_reuse": {
					Type:        framework.TypeBool,
					Description: "Hand one still-valid upstream token to several leases; it is revoked when the last of them ends.",
				},
				"min_remaining": {
					Type:        framework.TypeDurationSecond,
					Description: "Never hand out a reused token with less than this left. Default 30s.",
					Default:     int(defaultMinRemaining.Seconds()),
				},
				"verify_on_renew": {
					Type:        framework.TypeBool,
					Description: "On lease renewal, introspect the token upstream (RFC 7662).",
				},
			},
			ExistenceCheck: b.roleExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: &framework.PathOperation{Callback: b.pathRoleWrite},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathRoleWrite},
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathRoleRead},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathRoleDelete},
			},
			HelpSynopsis:    "What creds/NAME issues.",
			HelpDescription: rolesHelp,
		},
	}
}

func (b *backend) roleExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	r, err := getRole(ctx, req.Storage, d.Get("name").(string))
	return r != nil, err
}

func (b *backend) pathRolesList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := listRoles(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathRoleRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	r, err := getRole(ctx, req.Storage, d.Get("name").(string))
	if err != nil || r == nil {
		return nil, err
	}
	return &logical.Response{Data: roleData(r)}, nil
}

// roleData is a role's public view.
func roleData(r *roleEntry) map[string]any {
	return map[string]any{
		"grant_type":      r.GrantType,
		"grant":           r.Grant,
		"provider":        r.Provider,
		"scopes":          nonNil(r.Scopes),
		"audience":        nonNil(r.Audience),
		"resource":        nonNil(r.Resource),
		"strict_scopes":   r.StrictScopes,
		"ttl":             int64(r.TTL.Seconds()),
		"max_ttl":         int64(r.MaxTTL.Seconds()),
		"token_reuse":     r.TokenReuse,
		"min_remaining":   int64(r.MinRemaining.Seconds()),
		"verify_on_renew": r.VerifyOnRenew,
	}
}

func (b *backend) pathRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	r, err := getRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if r == nil {
		r = &roleEntry{Name: name, GrantType: grantTypeRefreshToken, StrictScopes: true, MinRemaining: defaultMinRemaining}
	}
	if v, ok := d.GetOk("grant_type"); ok {
		r.GrantType = v.(string)
	}
	for field, dst := range map[string]*string{"grant": &r.Grant, "provider": &r.Provider} {
		if v, ok := d.GetOk(field); ok {
			*dst = v.(string)
		}
	}
	for field, dst := range map[string]*[]string{"scopes": &r.Scopes, "audience": &r.Audience, "resource": &r.Resource} {
		if v, ok := d.GetOk(field); ok {
			*dst = normalizeScopes(v.([]string))
		}
	}
	for field, dst := range map[string]*bool{"strict_scopes": &r.StrictScopes, "token_reuse": &r.TokenReuse, "verify_on_renew": &r.VerifyOnRenew} {
		if v, ok := d.GetOk(field); ok {
			*dst = v.(bool)
		}
	}
	for field, dst := range map[string]*time.Duration{"ttl": &r.TTL, "max_ttl": &r.MaxTTL, "min_remaining": &r.MinRemaining} {
		if v, ok := d.GetOk(field); ok {
			if v.(int) < 0 {
				return logical.ErrorResponse("%s must not be negative", field), nil
			}
			*dst = time.Duration(v.(int)) * time.Second
		}
	}
	if r.MaxTTL > 0 && r.TTL > r.MaxTTL {
		return logical.ErrorResponse("ttl (%s) must not exceed max_ttl (%s)", r.TTL, r.MaxTTL), nil
	}
	for _, res := range r.Resource {
		if err := checkResourceIndicator(res); err != nil {
			return logical.ErrorResponse("resource: %s", err), nil
		}
	}

	var warnings []string
	switch r.GrantType {
	case grantTypeRefreshToken, grantTypeTokenExchange:
		if r.Grant == "" {
			return logical.ErrorResponse("grant is required for grant_type %s", r.GrantType), nil
		}
		if r.Provider != "" {
			return logical.ErrorResponse("provider is taken from the grant; leave it empty for grant_type %s", r.GrantType), nil
		}
		g, err := getGrant(ctx, req.Storage, r.Grant)
		if err != nil {
			return nil, err
		}
		if g == nil {
			return logical.ErrorResponse("grant: grant %q does not exist", r.Grant), nil
		}
		if r.GrantType == grantTypeTokenExchange {
			p, err := getProvider(ctx, req.Storage, g.Provider)
			if err != nil {
				return nil, err
			}
			if p != nil {
				if err := r.checkAllowedTargets(p); err != nil {
					return logical.ErrorResponse("%s", err), nil
				}
			}
		}
		if len(g.Scopes) > 0 {
			if extra := missingFrom(r.Scopes, g.Scopes); len(extra) > 0 {
				return logical.ErrorResponse("scopes: [%s] are not among grant %q's scopes [%s]; a role can only narrow a grant's scopes",
					strings.Join(extra, " "), r.Grant, strings.Join(g.Scopes, " ")), nil
			}
		} else if len(r.Scopes) > 0 {
			warnings = append(warnings, fmt.Sprintf("grant %q does not record its scopes, so the role's scopes could not be checked against them", r.Grant))
		}
	case grantTypeClientCredentials:
		if r.Provider == "" {
			return logical.ErrorResponse("provider is required for grant_type client_credentials"), nil
		}
		if r.Grant != "" {
			return logical.ErrorResponse("grant must be empty for grant_type client_credentials"), nil
		}
		p, err := getProvider(ctx, req.Storage, r.Provider)
		if err != nil {
			return nil, err
		}
		if p == nil {
			return logical.ErrorResponse("provider: provider %q does not exist", r.Provider), nil
		}
	}

	if err := putRole(ctx, req.Storage, r); err != nil {
		return nil, err
	}
	b.dropCaches(rolePath(name))
	return &logical.Response{Data: roleData(r), Warnings: warnings}, nil
}

func (b *backend) pathRoleDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	defer b.dropCaches(rolePath(name))
	return answered(nil, deleteRole(ctx, req.Storage, name))
}

const rolesHelp = `
A role says what creds/NAME issues. grant_type refresh_token (default)
refreshes a grant, optionally narrowing its scopes; client_credentials asks
the provider for a token of the client itself, one per lease; token_exchange
trades the grant's token (RFC 8693) for one with the role's scopes, audience
and resource, owned by the lease. ttl and max_ttl
bound leases, never beyond the upstream token's own expiry. token_reuse hands
one still-valid token to several leases (never with less than min_remaining
left) and revokes it when the last of them ends. verify_on_renew introspects
the token upstream at every renewal.
`
