package backend

import (
	"context"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

func pathGrants(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "grants/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "grants",
			},
			Fields: map[string]*framework.FieldSchema{
				"status": {
					Type:          framework.TypeString,
					Description:   "Only grants with this status.",
					AllowedValues: []any{statusActive, statusPending, statusInvalid, statusExpired, statusRevoking},
					Query:         true,
				},
				"provider":        {Type: framework.TypeLowerCaseString, Description: "Only grants of this provider.", Query: true},
				"owner_entity_id": {Type: framework.TypeString, Description: "Only grants owned by this Vault entity.", Query: true},
				"unused_for": {
					Type:        framework.TypeDurationSecond,
					Description: "Only grants not used for at least this long (last_used_at, or created_at if never used): stale grants. Accurate to an hour.",
					Query:       true,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathGrantsList},
			},
			HelpSynopsis:    "List grants with their inventory, optionally filtered.",
			HelpDescription: grantsHelp,
		},
		{
			Pattern: "grants/" + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "grant",
			},
			Fields: map[string]*framework.FieldSchema{
				"name":     {Type: framework.TypeLowerCaseString, Description: "Name of the grant.", Required: true},
				"provider": {Type: framework.TypeLowerCaseString, Description: "Provider that issued the grant. Required on create."},
				"refresh_token": {
					Type:         framework.TypeString,
					Description:  "Refresh token to import (write-only).",
					DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
				},
				"code":          {Type: framework.TypeString, Description: "Authorization code to exchange for the grant.", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
				"redirect_uri":  {Type: framework.TypeString, Description: "Redirect URI the code was issued to."},
				"code_verifier": {Type: framework.TypeString, Description: "PKCE code verifier of the code (write-only).", DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
				"scopes":        {Type: framework.TypeCommaStringSlice, Description: "Scopes the grant carries."},
				"max_age":       {Type: framework.TypeDurationSecond, Description: "Absolute lifetime; after it the grant is revoked upstream and marked expired."},
				"idle_timeout":  {Type: framework.TypeDurationSecond, Description: "The grant is revoked when unused this long."},
				"keep_alive":    {Type: framework.TypeDurationSecond, Description: "Refresh in the background at least this often."},
				"owner_entity_id": {
					Type:        framework.TypeString,
					Description: "Vault entity that owns the grant; it fails closed when that entity is disabled or deleted. Defaults to the caller's entity.",
				},
				"change_owner": {
					Type:        framework.TypeBool,
					Description: "On update: allow owner_entity_id to change (a departing owner could otherwise escape offboarding); the change is logged.",
				},
				"force": {Type: framework.TypeBool, Description: "On delete: erase without revoking upstream."},
			},
			ExistenceCheck: b.grantExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.CreateOperation: forwarded(b.pathGrantWrite),
				logical.UpdateOperation: forwarded(b.pathGrantWrite),
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathGrantRead},
				logical.DeleteOperation: forwarded(b.pathGrantDelete),
			},
			HelpSynopsis:    "One upstream grant: a sealed refresh token and its lifecycle.",
			HelpDescription: grantsHelp,
		},
	}
}

func (b *backend) grantExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	g, _, err := b.readGrant(ctx, req.Storage, d.Get("name").(string))
	return g != nil, err
}

func (b *backend) pathGrantsList(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	f := grantFilter{
		status:   d.Get("status").(string),
		provider: d.Get("provider").(string),
		owner:    strings.TrimSpace(d.Get("owner_entity_id").(string)),
	}
	if unused := d.Get("unused_for").(int); unused > 0 {
		f.unusedSince = b.now().Add(-time.Duration(unused) * time.Second)
	}
	names, entries, err := b.inventory(ctx, req.Storage, f)
	if err != nil {
		return nil, err
	}
	return logical.ListResponseWithInfo(names, grantKeyInfo(entries)), nil
}

func (b *backend) pathGrantRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	g, unsaved, err := b.readGrant(ctx, req.Storage, d.Get("name").(string))
	if err != nil || g == nil {
		return nil, err
	}
	return b.grantResponse(ctx, req.Storage, g, unsaved)
}

func (b *backend) grantResponse(ctx context.Context, s logical.Storage, g *grantEntry, unsaved bool) (*logical.Response, error) {
	shared, err := b.sharedLeasesOf(ctx, s, g)
	if err != nil {
		return nil, err
	}
	roles, err := b.rolesOfGrant(ctx, s, g.Name)
	if err != nil {
		return nil, err
	}
	data := grantData(g, g.ActiveLeases+shared)
	data["write_pending"] = unsaved
	data["roles"] = nonNil(roles)
	return &logical.Response{Data: data}, nil
}

// grantData is a grant's public view: metadata only, never the token.
func grantData(g *grantEntry, activeLeases int64) map[string]any {
	return map[string]any{
		"provider":        g.Provider,
		"status":          g.Status,
		"scopes":          nonNil(g.Scopes),
		"created_at":      formatTime(g.CreatedAt),
		"last_refresh_at": formatTime(g.LastRefreshAt),
		"last_used_at":    formatTime(g.LastUsedAt),
		"refresh_count":   g.RefreshCount,
		"rotation_count":  g.RotationCount,
		"active_leases":   activeLeases,
		"expires_at":      formatTime(g.shownExpiry()),
		"max_age":         int64(g.MaxAge.Seconds()),
		"idle_timeout":    int64(g.IdleTimeout.Seconds()),
		"keep_alive":      int64(g.KeepAlive.Seconds()),
		"owner_entity_id": g.OwnerEntityID,
		"subject":         g.Subject,
		"last_error":      g.LastError,
	}
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func (b *backend) pathGrantWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	gw := &grantWrite{
		name:         d.Get("name").(string),
		refreshToken: d.Get("refresh_token").(string),
		code:         d.Get("code").(string),
		redirectURI:  d.Get("redirect_uri").(string),
		codeVerifier: d.Get("code_verifier").(string),
		creating:     req.Operation == logical.CreateOperation,
		caller:       req.EntityID,
		changeOwner:  d.Get("change_owner").(bool),
	}
	if gw.refreshToken != "" && gw.code != "" {
		return logical.ErrorResponse("refresh_token and code: give one or the other"), nil
	}
	if gw.code == "" {
		for _, f := range []string{"redirect_uri", "code_verifier"} {
			if _, ok := d.GetOk(f); ok {
				return logical.ErrorResponse("%s is only used with code", f), nil
			}
		}
	} else if gw.redirectURI == "" {
		return logical.ErrorResponse("redirect_uri is required with code"), nil
	}
	if gw.codeVerifier != "" && !oauthclient.ValidCodeVerifier(gw.codeVerifier) {
		return logical.ErrorResponse("code_verifier: RFC 7636 needs 43 to 128 characters of A-Z, a-z, 0-9 and -._~"), nil
	}
	if v, ok := d.GetOk("provider"); ok {
		gw.provider = v.(string)
	}
	if v, ok := d.GetOk("scopes"); ok {
		scopes := normalizeScopes(v.([]string))
		gw.scopes = &scopes
	}
	for field, dst := range map[string]**time.Duration{"max_age": &gw.maxAge, "idle_timeout": &gw.idleTimeout, "keep_alive": &gw.keepAlive} {
		if v, ok := d.GetOk(field); ok {
			if v.(int) < 0 {
				return logical.ErrorResponse("%s must not be negative", field), nil
			}
			dur := time.Duration(v.(int)) * time.Second
			*dst = &dur
		}
	}
	if v, ok := d.GetOk("owner_entity_id"); ok {
		id := strings.TrimSpace(v.(string))
		if id != "" {
			if err := b.checkOwner(id); err != nil {
				return respondBadInput(err)
			}
		}
		gw.owner = &id
	}
	g, warnings, err := b.writeGrant(ctx, req.Storage, gw)
	if err != nil {
		return respondBadInput(err)
	}
	resp, err := b.grantResponse(ctx, req.Storage, g, false)
	if err == nil {
		resp.Warnings = warnings
	}
	return resp, err
}

func (b *backend) pathGrantDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	return answered(b.deleteGrant(ctx, req.Storage, d.Get("name").(string), d.Get("force").(bool)))
}

const grantsHelp = `
A grant is one upstream authorization: its refresh token, sealed in Vault
and never returned, and its lifecycle. Create it by importing refresh_token,
or by exchanging code with redirect_uri (and code_verifier). Reads return
metadata only. Delete revokes the refresh token upstream (and every
outstanding revocable access token) and then erases the grant; when the
provider cannot be reached the grant stays as "revoking" and the engine
retries in the background. force=true erases without contacting upstream.
An upstream invalid_grant marks the grant invalid; no other upstream error
changes a grant.
`
