package backend

import (
	"context"
	"fmt"
	"net/http"
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
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathGrantsList},
			},
			HelpSynopsis:    "List grants with their provider and status.",
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
	g, err := getGrant(ctx, req.Storage, d.Get("name").(string))
	return g != nil, err
}

func (b *backend) pathGrantsList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, grantPrefix)
	if err != nil {
		return nil, err
	}
	info, err := b.grantKeyInfo(ctx, req.Storage, names)
	if err != nil {
		return nil, err
	}
	return logical.ListResponseWithInfo(names, info), nil
}

func (b *backend) pathGrantRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	g, err := getGrant(ctx, req.Storage, d.Get("name").(string))
	if err != nil || g == nil {
		return nil, err
	}
	shared, err := b.sharedLeasesOf(ctx, req.Storage, g)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: grantData(g, g.ActiveLeases+shared)}, nil
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
		"expires_at":      formatTime(g.expiresAt()),
		"max_age":         int64(g.MaxAge.Seconds()),
		"idle_timeout":    int64(g.IdleTimeout.Seconds()),
		"keep_alive":      int64(g.KeepAlive.Seconds()),
		"owner_entity_id": g.OwnerEntityID,
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
	name := d.Get("name").(string)
	refreshToken := d.Get("refresh_token").(string)
	code := d.Get("code").(string)
	if refreshToken != "" && code != "" {
		return logical.ErrorResponse("refresh_token and code: give one or the other"), nil
	}
	if code == "" {
		for _, f := range []string{"redirect_uri", "code_verifier"} {
			if _, ok := d.GetOk(f); ok {
				return logical.ErrorResponse("%s is only used with code", f), nil
			}
		}
	}

	ctx = detached(ctx) // a code exchange's result must be stored
	unlock := b.grantLocks.Lock(name)
	defer unlock()

	g, err := getGrant(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	creating := g == nil
	if creating {
		if req.Operation == logical.UpdateOperation {
			return logical.ErrorResponse("grant %q does not exist", name), nil
		}
		if refreshToken == "" && code == "" {
			return logical.ErrorResponse("refresh_token or code is required to create a grant"), nil
		}
		g = &grantEntry{Name: name, ID: randomID(), CreatedAt: time.Now().UTC(), OwnerEntityID: req.EntityID}
	} else if g.Status == statusRevoking {
		return logical.ErrorResponse("grant %q is being revoked; wait for it to finish or delete it with force=true", name), nil
	}

	if v, ok := d.GetOk("provider"); ok && v.(string) != g.Provider {
		if !creating {
			return logical.ErrorResponse("provider: a grant's provider cannot change; delete the grant and create it again"), nil
		}
		g.Provider = v.(string)
	}
	if g.Provider == "" {
		return logical.ErrorResponse("provider is required"), nil
	}
	if v, ok := d.GetOk("scopes"); ok {
		g.Scopes = normalizeScopes(v.([]string))
	}
	for field, dst := range map[string]*time.Duration{"max_age": &g.MaxAge, "idle_timeout": &g.IdleTimeout, "keep_alive": &g.KeepAlive} {
		if v, ok := d.GetOk(field); ok {
			if v.(int) < 0 {
				return logical.ErrorResponse("%s must not be negative", field), nil
			}
			*dst = time.Duration(v.(int)) * time.Second
		}
	}
	if v, ok := d.GetOk("owner_entity_id"); ok {
		id := strings.TrimSpace(v.(string))
		if id != "" {
			entity, err := b.System().EntityInfo(id)
			if err != nil {
				return nil, err
			}
			if entity == nil {
				return logical.ErrorResponse("owner_entity_id: entity %q does not exist", id), nil
			}
		}
		g.OwnerEntityID = id
	}

	h, err := b.provider(ctx, req.Storage, g.Provider)
	if err != nil {
		if creating {
			return logical.ErrorResponse("provider: %s", err), nil
		}
		return nil, err
	}

	switch {
	case code != "":
		redirectURI := d.Get("redirect_uri").(string)
		if redirectURI == "" {
			return logical.ErrorResponse("redirect_uri is required with code"), nil
		}
		tok, err := h.client.ExchangeCode(ctx, code, redirectURI, d.Get("code_verifier").(string))
		if err != nil {
			if oauthclient.HasCode(err, oauthclient.ErrCodeInvalidGrant) {
				return nil, logical.CodedError(http.StatusBadRequest, fmt.Sprintf(
					"code: provider %q rejected the authorization code (invalid_grant); it may be expired, used, or issued for another redirect_uri or code_verifier", g.Provider))
			}
			return nil, upstreamError(g.Provider, err, g.Scopes)
		}
		if tok.RefreshToken == "" {
			return logical.ErrorResponse("code: provider %q returned no refresh token; request offline access (e.g. the offline_access scope) when authorizing", g.Provider), nil
		}
		refreshToken = tok.RefreshToken
		if tok.ScopeReturned {
			g.Scopes = normalizeScopes(tok.Scopes)
		}
	case refreshToken != "":
	default:
		if err := b.schedule(ctx, req.Storage, g); err != nil {
			return nil, err
		}
		if err := b.putGrant(ctx, req.Storage, g); err != nil {
			return nil, err
		}
		return nil, nil
	}

	kr, err := b.sealingKeys(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if g.RefreshToken, err = kr.seal(refreshToken, g.aad()); err != nil {
		return nil, err
	}
	g.Status = statusActive
	g.LastError = ""
	if err := b.schedule(ctx, req.Storage, g); err != nil {
		return nil, err
	}
	if err := b.putGrant(ctx, req.Storage, g); err != nil {
		return nil, err
	}
	return nil, nil
}

func (b *backend) pathGrantDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	force := d.Get("force").(bool)
	ctx = detached(ctx)
	unlock := b.grantLocks.Lock(name)
	defer unlock()

	g, err := getGrant(ctx, req.Storage, name)
	if err != nil || g == nil {
		return nil, err
	}
	if force {
		if err := b.eraseGrant(ctx, req.Storage, g); err != nil {
			return nil, err
		}
		return &logical.Response{Warnings: []string{"grant erased without revoking anything upstream (force=true)"}}, nil
	}

	g.Status = statusRevoking
	g.EraseAfterRevoke = true
	if err := b.putGrant(ctx, req.Storage, g); err != nil {
		return nil, err
	}
	if err := queueRevocation(ctx, req.Storage, name); err != nil {
		return nil, err
	}
	done, err := b.revokeGrantUpstream(ctx, req.Storage, g)
	if err != nil {
		b.background.wake()
		return &logical.Response{
			Data: map[string]any{"status": statusRevoking, "last_error": g.LastError},
			Warnings: []string{fmt.Sprintf(
				"grant %q could not be revoked upstream (%s); it is kept as %q and the engine retries in the background. Use force=true to erase it without revoking upstream.",
				name, g.LastError, statusRevoking)},
		}, nil
	}
	return done, nil
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
