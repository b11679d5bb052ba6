package backend

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

// What ending a lease does upstream.
const (
	revocationOnLeaseEnd = "on_lease_end"
	revocationExpiryOnly = "expiry_only"
)

// issueCreds gets the token a creds read hands out for role: a shared one
// (token_reuse) or a fresh one, remembered for revocation.
func (b *backend) issueCreds(ctx context.Context, s logical.Storage, role *roleEntry, cfg *configEntry) (*issuedToken, error) {
	if role.TokenReuse {
		return b.issueShared(ctx, s, role, cfg)
	}
	it, err := b.issue(ctx, s, role)
	if err != nil {
		return nil, err
	}
	it.tokenID = randomID()
	b.trackOutstanding(ctx, s, it)
	return it, nil
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

// trackOutstanding remembers an access token that its lease will revoke,
// so that deleting its grant or provider can revoke it as well (and a
// provider is not deleted under it).
func (b *backend) trackOutstanding(ctx context.Context, s logical.Storage, it *issuedToken) {
	if it.revocation != revocationOnLeaseEnd {
		return
	}
	owner := providerOwner(it.provider)
	if it.grant != nil {
		owner = it.grant.ID
	}
	if err := b.rememberOutstanding(detached(ctx), s, owner, it.tokenID, it.token); err != nil {
		b.logger.Warn("remembering outstanding token failed; deleting its grant or provider will not revoke it", "provider", it.provider, "error", err)
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
		check:      role.checkGrantScopes,
		accept: func(tok *oauthclient.Token) error {
			w, err := checkScopes(role, tok)
			warnings = w
			return err
		},
	})
	if err != nil {
		if r != nil {
			b.revokeRefused(ctx, role, r)
		}
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
	check := func(g *grantEntry) error {
		if err := role.checkGrantScopes(g); err != nil {
			return err
		}
		h, err := b.provider(ctx, s, g.Provider)
		if err != nil {
			return nil // the refresh reports it
		}
		return role.checkAllowedTargets(h.entry)
	}
	r, err := b.refreshGrant(ctx, s, role.Grant, refreshRequest{countLease: !role.TokenReuse, check: check})
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

// revokeRefused revokes a token strict_scopes refused, where that does not
// kill the grant: nobody will hold it, so it must not stay alive upstream.
func (b *backend) revokeRefused(ctx context.Context, role *roleEntry, r *refreshed) {
	if !r.provider.entry.canRevoke(true) {
		return
	}
	if err := r.provider.client.Revoke(detached(ctx), r.token.AccessToken, oauthclient.HintAccessToken); err != nil {
		b.logger.Warn("revoking refused token failed", "role", role.Name, "error", err)
	}
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

// leaseTTL bounds the role's TTL by the token's remaining life, less the
// refresh skew where the token lives long enough to spare it.
func leaseTTL(roleTTL time.Duration, expiry time.Time, skew time.Duration, now time.Time) time.Duration {
	if expiry.IsZero() {
		return roleTTL
	}
	remaining := max(leaseEnd(expiry, skew, now).Sub(now), time.Second)
	if roleTTL <= 0 || roleTTL > remaining {
		return remaining
	}
	return roleTTL
}

// leaseEnd is the latest a lease of a token expiring at expiry, issued at
// issued, may last: the expiry less the refresh skew, when the token had
// more than twice the skew to live at issue.
func leaseEnd(expiry time.Time, skew time.Duration, issued time.Time) time.Time {
	if expiry.Sub(issued) > 2*skew {
		return expiry.Add(-skew)
	}
	return expiry
}
