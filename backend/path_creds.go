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

// What ending a lease does upstream.
const (
	revocationOnLeaseEnd = "on_lease_end"
	revocationExpiryOnly = "expiry_only"
)

func pathCreds(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "creds/" + framework.GenericNameRegex("name"),
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "generate",
			OperationSuffix: "credentials",
		},
		Fields: map[string]*framework.FieldSchema{
			"name": {Type: framework.TypeLowerCaseString, Description: "Name of the role.", Required: true},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: forwarded(b.pathCredsRead),
		},
		HelpSynopsis:    "Issue a leased upstream access token.",
		HelpDescription: credsHelp,
	}
}

// issuedToken is an access token about to become a lease.
type issuedToken struct {
	token      *oauthclient.Token
	provider   string
	grant      *grantEntry // nil for client_credentials
	revocation string
	tokenID    string
	shared     bool
	tokenFresh bool // a new shared token (not a reuse)
	warnings   []string
}

func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	role, err := b.role(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return logical.ErrorResponse("role %q does not exist", name), nil
	}
	cfg, err := b.mountConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	var it *issuedToken
	if role.TokenReuse {
		it, err = b.issueShared(ctx, req.Storage, role, cfg)
	} else {
		it, err = b.issue(ctx, req.Storage, role)
		if err == nil {
			it.tokenID = randomID()
			b.trackOutstanding(ctx, req.Storage, it)
		}
	}
	if err != nil {
		return nil, err
	}
	return b.leaseResponse(role, it, cfg), nil
}

// trackOutstanding remembers a grant's access token that its lease will
// revoke, so that deleting the grant can revoke it as well.
func (b *backend) trackOutstanding(ctx context.Context, s logical.Storage, it *issuedToken) {
	if it.grant == nil || it.revocation != revocationOnLeaseEnd {
		return
	}
	if err := b.rememberOutstanding(detached(ctx), s, it.grant.ID, it.tokenID, it.token); err != nil {
		b.logger.Warn("remembering outstanding token failed; deleting the grant will not revoke it", "grant", it.grant.Name, "error", err)
	}
}

// issue gets a fresh upstream token for role.
func (b *backend) issue(ctx context.Context, s logical.Storage, role *roleEntry) (*issuedToken, error) {
	switch role.GrantType {
	case grantTypeRefreshToken:
		return b.issueFromGrant(ctx, s, role)
	case grantTypeClientCredentials:
		return b.issueClientCredentials(ctx, s, role)
	case grantTypeTokenExchange:
		return b.issueTokenExchange(ctx, s, role)
	default:
		return nil, logical.CodedError(http.StatusBadRequest, fmt.Sprintf("role %q: grant_type %q is not supported", role.Name, role.GrantType))
	}
}

func (b *backend) issueFromGrant(ctx context.Context, s logical.Storage, role *roleEntry) (*issuedToken, error) {
	var warnings []string
	// Leases of shared tokens are counted with the shared token instead.
	r, err := b.refreshGrant(ctx, s, role.Grant, refreshRequest{
		opts:       role.tokenOptions(),
		countLease: !role.TokenReuse,
		accept: func(tok *oauthclient.Token) error {
			w, err := checkScopes(role, tok)
			warnings = w
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	it := &issuedToken{token: r.token, provider: r.grant.Provider, grant: r.grant, warnings: warnings, revocation: revocationExpiryOnly}
	if r.provider.entry.canRevoke(true) {
		it.revocation = revocationOnLeaseEnd
	}
	return it, nil
}

func (b *backend) issueClientCredentials(ctx context.Context, s logical.Storage, role *roleEntry) (*issuedToken, error) {
	h, err := b.provider(ctx, s, role.Provider)
	if err != nil {
		return nil, upstreamError(role.Provider, err, role.Scopes)
	}
	tok, err := h.client.ClientCredentials(ctx, role.tokenOptions())
	if err != nil {
		b.logger.Warn("client credentials request failed", "role", role.Name, "provider", role.Provider, "error", err)
		return nil, upstreamError(role.Provider, err, role.Scopes)
	}
	warnings, err := checkScopes(role, tok)
	if err != nil {
		// The token is ours alone: do not leave it alive upstream.
		if rerr := h.client.Revoke(detached(ctx), tok.AccessToken, oauthclient.HintAccessToken); rerr != nil {
			b.logger.Warn("revoking refused token failed", "role", role.Name, "error", rerr)
		}
		return nil, err
	}
	it := &issuedToken{token: tok, provider: role.Provider, warnings: warnings, revocation: revocationExpiryOnly}
	if h.entry.canRevoke(false) {
		it.revocation = revocationOnLeaseEnd
	}
	return it, nil
}

// issueTokenExchange refreshes the grant for a subject token and trades it
// (RFC 8693) for a token with the role's scopes, audience and resource. The
// new token belongs to the lease alone, so it is revoked at lease end where
// the provider can revoke; the subject token is revoked at once where that
// does not kill the grant, and otherwise expires unused.
func (b *backend) issueTokenExchange(ctx context.Context, s logical.Storage, role *roleEntry) (*issuedToken, error) {
	r, err := b.refreshGrant(ctx, s, role.Grant, refreshRequest{countLease: !role.TokenReuse})
	if err != nil {
		return nil, err
	}
	h := r.provider
	defer func() {
		if h.entry.canRevoke(true) {
			if err := h.client.Revoke(detached(ctx), r.token.AccessToken, oauthclient.HintAccessToken); err != nil {
				b.logger.Debug("revoking the exchanged subject token failed", "grant", role.Grant, "error", err)
			}
		}
	}()
	tok, err := h.client.Exchange(ctx, r.token.AccessToken, oauthclient.TokenTypeAccessToken, role.tokenOptions())
	if err == nil {
		var warnings []string
		if warnings, err = checkScopes(role, tok); err == nil {
			it := &issuedToken{token: tok, provider: r.grant.Provider, grant: r.grant, warnings: warnings, revocation: revocationExpiryOnly}
			if h.entry.canRevoke(false) {
				it.revocation = revocationOnLeaseEnd
			}
			return it, nil
		}
		if rerr := h.client.Revoke(detached(ctx), tok.AccessToken, oauthclient.HintAccessToken); rerr != nil {
			b.logger.Warn("revoking refused token failed", "role", role.Name, "error", rerr)
		}
		b.releaseLeaseCount(ctx, s, r.grant, role)
		return nil, err
	}
	// The lease was counted with the refresh; it will not exist.
	b.releaseLeaseCount(ctx, s, r.grant, role)
	b.logger.Warn("token exchange failed", "role", role.Name, "provider", r.grant.Provider, "error", err)
	// The grant itself is fine: an exchange error never invalidates it.
	return nil, upstreamError(r.grant.Provider, err, role.Scopes)
}

// releaseLeaseCount undoes the lease count of a refresh whose token did not
// become a lease.
func (b *backend) releaseLeaseCount(ctx context.Context, s logical.Storage, g *grantEntry, role *roleEntry) {
	if role.TokenReuse {
		return
	}
	if err := b.releaseGrantLease(detached(ctx), s, &leaseData{Grant: g.Name, GrantID: g.ID}); err != nil {
		b.logger.Warn("releasing lease count failed", "grant", g.Name, "error", err)
	}
}

// checkScopes compares what the upstream granted with what the role asked.
// Some servers ignore a narrower scope on refresh: with strict_scopes such a
// token is refused, otherwise handed out with a warning.
func checkScopes(role *roleEntry, tok *oauthclient.Token) ([]string, error) {
	if len(role.Scopes) == 0 || !tok.ScopeReturned {
		return nil, nil
	}
	extra := missingFrom(normalizeScopes(tok.Scopes), role.Scopes)
	if len(extra) == 0 {
		return nil, nil
	}
	msg := fmt.Sprintf("the provider granted scopes beyond role %q's [%s]: [%s]",
		role.Name, strings.Join(role.Scopes, " "), strings.Join(extra, " "))
	if role.StrictScopes {
		return nil, logical.CodedError(http.StatusBadRequest, msg+"; the token was refused (strict_scopes)")
	}
	return []string{msg}, nil
}

// tokenScopes is what the token really carries: the response's scope, or
// the requested scopes when it has none.
func tokenScopes(role *roleEntry, it *issuedToken) []string {
	if it.token.ScopeReturned {
		return normalizeScopes(it.token.Scopes)
	}
	if len(role.Scopes) > 0 {
		return role.Scopes
	}
	if it.grant != nil {
		return it.grant.Scopes
	}
	return nil
}

func (b *backend) leaseResponse(role *roleEntry, it *issuedToken, cfg *configEntry) *logical.Response {
	grantName := ""
	internal := map[string]any{
		"role":         role.Name,
		"grant_type":   role.GrantType,
		"provider":     it.provider,
		"access_token": it.token.AccessToken,
		"revocation":   it.revocation,
		"token_id":     it.tokenID,
		"expires_at":   "",
		"shared":       "",
		"grant":        "",
		"grant_id":     "",
	}
	if it.grant != nil {
		grantName = it.grant.Name
		internal["grant"], internal["grant_id"] = it.grant.Name, it.grant.ID
	}
	if !it.token.Expiry.IsZero() {
		internal["expires_at"] = it.token.Expiry.UTC().Format(time.RFC3339Nano)
	}
	if it.shared {
		internal["shared"] = "true"
	}
	resp := b.Secret(secretTypeAccess).Response(map[string]any{
		"access_token": it.token.AccessToken,
		"token_type":   it.token.TokenType,
		"expires_at":   formatTime(it.token.Expiry),
		"scopes":       nonNil(tokenScopes(role, it)),
		"grant":        grantName,
		"revocation":   it.revocation,
	}, internal)
	resp.Secret.TTL = leaseTTL(role.TTL, it.token.Expiry, cfg.RefreshSkew, time.Now())
	resp.Secret.MaxTTL = role.MaxTTL
	resp.Warnings = it.warnings
	return resp
}

// leaseTTL bounds the role's TTL by the token's remaining life, less the
// refresh skew where the token lives long enough to spare it.
func leaseTTL(roleTTL time.Duration, expiry time.Time, skew time.Duration, now time.Time) time.Duration {
	if expiry.IsZero() {
		return roleTTL
	}
	remaining := expiry.Sub(now)
	if remaining > 2*skew {
		remaining -= skew
	}
	remaining = max(remaining, time.Second)
	if roleTTL <= 0 || roleTTL > remaining {
		return remaining
	}
	return roleTTL
}

const credsHelp = `
Reading creds/ROLE issues an upstream access token as a Vault lease. The
lease TTL never exceeds the token's remaining life. "revocation" says what
ending the lease does: on_lease_end, the token is revoked upstream (RFC
7009); expiry_only, it lives until it expires, because revoking it would
also kill the grant (a refresh_token role at a provider with
revocation_cascades) or the provider cannot revoke.
`
