package backend

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

// refreshed is what one refresh of a grant produced.
type refreshed struct {
	token    *oauthclient.Token
	grant    *grantEntry
	provider *providerHandle
}

// refreshRequest says what a refresh is for.
type refreshRequest struct {
	opts oauthclient.TokenOptions
	// countLease: the token goes to a lease counted on the grant.
	countLease bool
	// keepAlive: a background refresh, not a use of the grant (it must not
	// hold off idle_timeout).
	keepAlive bool
	// accept runs under the lock before the lease is counted; if it
	// refuses the token the rotation is still stored.
	accept func(*oauthclient.Token) error
}

// refreshGrant redeems the grant's refresh token for an access token.
//
// Rotation safety: one refresh per grant is in flight (grantLocks); the
// grant is re-read under the lock, so the newest refresh token is the one
// redeemed; a rotated refresh token is stored before anything is returned.
func (b *backend) refreshGrant(ctx context.Context, s logical.Storage, name string, rr refreshRequest) (*refreshed, error) {
	opts := rr.opts
	ctx = detached(ctx)
	unlock := b.grantLocks.Lock(name)
	defer unlock()

	g, err := getGrant(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if g == nil {
		return nil, errNoGrant(name)
	}
	now := time.Now()
	if err := b.unusableError(g, now); err != nil {
		if why := g.lapsed(now); why != "" && g.Status == statusActive {
			b.expireGrant(ctx, s, g, why)
		}
		return nil, err
	}
	h, err := b.provider(ctx, s, g.Provider)
	if err != nil {
		return nil, upstreamError(g.Provider, err, opts.Scopes)
	}
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	refreshToken, err := kr.open(g.RefreshToken, g.aad())
	if err != nil {
		return nil, fmt.Errorf("grant %q: %w", name, err)
	}

	tok, err := h.client.Refresh(ctx, refreshToken, opts)
	if err != nil {
		return nil, b.refreshFailed(ctx, s, g, err, opts.Scopes)
	}

	if tok.RefreshToken != "" && tok.RefreshToken != refreshToken {
		if g.RefreshToken, err = kr.seal(tok.RefreshToken, g.aad()); err != nil {
			return nil, err
		}
		g.RotationCount++
	}
	if len(g.Scopes) == 0 && len(opts.Scopes) == 0 && tok.ScopeReturned {
		g.Scopes = tok.Scopes
	}
	g.RefreshCount++
	g.LastRefreshAt = now.UTC()
	if !rr.keepAlive {
		g.LastUsedAt = now.UTC()
	}
	g.LastError = ""
	var acceptErr error
	if rr.accept != nil {
		acceptErr = rr.accept(tok)
	}
	if acceptErr == nil && rr.countLease {
		g.ActiveLeases++
	}
	if err := b.storeRotation(ctx, s, g); err != nil {
		return nil, err
	}
	if acceptErr != nil {
		return nil, acceptErr
	}
	return &refreshed{token: tok, grant: g, provider: h}, nil
}

// storeRotation persists a grant right after a refresh. Losing this write
// after a rotation would burn the grant at the next refresh, so it is
// retried briefly before giving up.
func (b *backend) storeRotation(ctx context.Context, s logical.Storage, g *grantEntry) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = b.putGrant(ctx, s, g); err == nil || isReadOnlyErr(err) {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	if err != nil {
		b.logger.Error("storing refreshed grant failed; if the provider rotated the refresh token the grant will need re-authorization",
			"grant", g.Name, "error", err)
	}
	return err
}

// refreshFailed records a failed refresh and maps it to the caller's error.
// Only invalid_grant changes the grant's status: any other failure can be
// fixed upstream or by the operator, so the grant is kept as it is.
func (b *backend) refreshFailed(ctx context.Context, s logical.Storage, g *grantEntry, err error, scopes []string) error {
	if oauthclient.HasCode(err, oauthclient.ErrCodeInvalidGrant) {
		g.Status = statusInvalid
		g.LastError = err.Error()
		if perr := b.putGrant(ctx, s, g); perr != nil {
			b.logger.Error("marking grant invalid failed", "grant", g.Name, "error", perr)
		}
		b.logger.Warn("provider rejected the refresh token; grant marked invalid", "grant", g.Name, "provider", g.Provider)
		return logical.CodedError(http.StatusBadRequest, fmt.Sprintf(
			"grant %q is invalid: provider %q said invalid_grant; re-authorization is needed", g.Name, g.Provider))
	}
	if len(scopes) == 0 {
		scopes = g.Scopes
	}
	mapped := upstreamError(g.Provider, err, scopes)
	g.LastError = mapped.Error()
	if perr := b.putGrant(ctx, s, g); perr != nil && !isReadOnlyErr(perr) {
		b.logger.Warn("recording refresh error failed", "grant", g.Name, "error", perr)
	}
	b.logger.Warn("refresh failed", "grant", g.Name, "provider", g.Provider, "error", mapped)
	return mapped
}

// expireGrant marks a grant whose max_age or idle_timeout ran out and
// queues the upstream revocation of its refresh token.
func (b *backend) expireGrant(ctx context.Context, s logical.Storage, g *grantEntry, why string) {
	g.Status = statusExpired
	g.LastError = why
	if err := b.putGrant(ctx, s, g); err != nil {
		b.logger.Error("marking grant expired failed", "grant", g.Name, "error", err)
		return
	}
	if err := queueRevocation(ctx, s, g.Name); err != nil {
		b.logger.Error("queueing revocation of expired grant failed", "grant", g.Name, "error", err)
	}
	b.background.wake()
}
