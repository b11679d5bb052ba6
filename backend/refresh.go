package backend

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
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
	// check runs under the lock before anything is sent upstream: the
	// role's own checks against the grant as it is now.
	check func(*grantEntry) error
	// accept runs under the lock before the lease is counted; if it
	// refuses the token the rotation is still stored, and refreshGrant
	// returns the refused token with accept's error.
	accept func(*oauthclient.Token) error
}

// refreshGrant redeems the grant's refresh token for an access token.
//
// Rotation safety: one refresh per grant is in flight (the grant's lock);
// the grant is re-read under the lock, so the newest refresh token is the
// one redeemed; a rotated refresh token is stored before anything is
// returned, and kept in memory until it is stored if storage fails.
func (b *backend) refreshGrant(ctx context.Context, s logical.Storage, name string, rr refreshRequest) (*refreshed, error) {
	ctx = detached(ctx)
	if !b.inflight.begin() {
		return nil, logical.CodedError(http.StatusServiceUnavailable, "the engine is shutting down; retry")
	}
	defer b.inflight.end()
	unlock := b.lockGrant(name)
	defer unlock()

	g, err := b.loadGrantLocked(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if g == nil {
		return nil, errNoGrant(name)
	}
	now := b.now()
	if err := b.unusableError(g, now); err != nil {
		if why := g.lapsed(now); why != "" && g.Status == statusActive {
			_ = b.expireGrantLocked(ctx, s, g, why) // the sweep retries a failure
		}
		return nil, err
	}
	if rr.check != nil {
		if err := rr.check(g); err != nil {
			return nil, err
		}
	}
	h, err := b.provider(ctx, s, g.Provider)
	if err != nil {
		return nil, upstreamError(g.Provider, err, rr.opts.Scopes)
	}
	if !g.boundTo(h.entry) {
		g.markInvalid(unboundError(g).Error())
		if err := b.saveGrantLocked(ctx, s, g); err != nil {
			return nil, err
		}
		return nil, unboundError(g)
	}
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	refreshToken, err := kr.open(g.RefreshToken, g.aad())
	if err != nil {
		return nil, fmt.Errorf("grant %q: %w", name, err)
	}

	interrupted := !g.RefreshStartedAt.IsZero()
	g.RefreshStartedAt = now.UTC()
	if err := b.storeGrant(ctx, s, g); err != nil {
		// Nothing was sent: the stored token is still the live one.
		return nil, err
	}

	tok, err := h.client.Refresh(ctx, refreshToken, rr.opts)
	b.metrics.refreshes.inc(g.Provider, refreshOutcome(err))
	switch {
	case !interrupted:
	case err == nil:
		b.metrics.interrupted.inc(g.Provider, "recovered")
	case oauthclient.IsInvalidGrant(err):
		b.metrics.interrupted.inc(g.Provider, "lost")
	}
	if err != nil {
		return nil, b.refreshFailed(ctx, s, g, err, rr.opts.Scopes, interrupted)
	}

	g.RefreshStartedAt = time.Time{}
	rotated := tok.RefreshToken != "" && tok.RefreshToken != refreshToken
	if rotated {
		g.newRefreshToken = tok.RefreshToken
		g.RotationCount++
		b.metrics.rotations.inc(g.Provider)
	}
	if tok.RefreshToken != "" {
		// A new refresh token comes with its own lifetime, or none known.
		g.RefreshExpiresAt = tok.RefreshExpiry.UTC()
	}
	if due := g.renewDue(); !due.IsZero() && (g.DueAt.IsZero() || g.DueAt.After(due)) {
		// The hot path writes the due index only when the refresh token's
		// own end needs a keep-alive the index does not hold yet. A failure
		// must not lose the rotated token: the next refresh tries again.
		if err := b.schedule(ctx, s, g); err != nil {
			b.logger.Warn("scheduling a keep-alive before the refresh token's end failed; the next refresh tries again", "grant", g.Name, "error", err)
		}
	}
	if len(g.Scopes) == 0 && len(rr.opts.Scopes) == 0 && tok.ScopeReturned {
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
		if acceptErr == nil && rr.countLease {
			g.ActiveLeases-- // no lease will hold this token
		}
		b.keepUnsaved(g)
		return nil, err
	}
	if rotated {
		reason := "use"
		if rr.keepAlive {
			reason = "keep_alive"
		}
		b.rotated(g, reason)
	}
	// A refused token comes back with the error so the caller can revoke it.
	return &refreshed{token: tok, grant: g, provider: h}, acceptErr
}

// storeRotation persists a grant right after a refresh. Losing this write
// after a rotation would burn the grant at the next refresh, so it is
// retried briefly; if storage still fails, the caller keeps the grant in
// memory (keepUnsaved) where the next refresh finds it and the background
// worker keeps retrying the write. The refresh fails: the token it got is
// not handed out while the grant is not safely stored.
func (b *backend) storeRotation(ctx context.Context, s logical.Storage, g *grantEntry) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = b.storeGrant(ctx, s, g); err == nil || isReadOnlyErr(err) {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	if err == nil {
		return nil
	}
	b.logger.Error("storing refreshed grant failed; the grant is kept in memory and the write retried in the background",
		"grant", g.Name, "error", err)
	return fmt.Errorf("storing grant %q after a refresh failed; the engine keeps retrying: %w", g.Name, err)
}

// keepUnsaved remembers a grant whose write failed after its refresh
// token may have rotated. Its lock is held.
func (b *backend) keepUnsaved(g *grantEntry) {
	cp := *g
	b.cacheMu.Lock()
	b.unsaved[g.Name] = &cp
	b.cacheMu.Unlock()
	b.background.wake()
}

// unsavedGrantNames lists the grants held in memory until stored.
func (b *backend) unsavedGrantNames() []string {
	b.cacheMu.RLock()
	defer b.cacheMu.RUnlock()
	return slices.Collect(maps.Keys(b.unsaved))
}

// flushUnsaved retries the writes of unsaved grants; it returns how many
// are still unsaved.
func (b *backend) flushUnsaved(ctx context.Context, s logical.Storage) int {
	left := 0
	for _, name := range b.unsavedGrantNames() {
		unlock := b.lockGrant(name)
		g, err := b.loadGrantLocked(ctx, s, name)
		if err == nil && g != nil {
			err = b.storeGrant(ctx, s, g)
		}
		unlock()
		if err != nil {
			left++
			b.logger.Warn("storing unsaved grant failed; will retry", "grant", name, "error", err)
		}
	}
	return left
}

// interruptedRefreshHelp is what last_error says when a refresh died after
// sending the token and the stored one was then refused.
const interruptedRefreshHelp = "a refresh was interrupted (the node stopped after sending the refresh token upstream) and the provider has since refused the stored refresh token, which it had rotated; re-authorize the grant, and set a refresh-token rotation grace period at the provider so that an interrupted refresh can be retried"

// refreshFailed records a failed refresh and maps it to the caller's error.
// Only invalid_grant changes the grant's status: any other failure can be
// fixed upstream or by the operator, so the grant is kept as it is.
// interrupted says the stored token was left by a refresh that died.
func (b *backend) refreshFailed(ctx context.Context, s logical.Storage, g *grantEntry, err error, scopes []string, interrupted bool) error {
	if oauthclient.IsInvalidGrant(err) {
		why := err.Error()
		if interrupted {
			why = interruptedRefreshHelp
		}
		g.markInvalid(why)
		if perr := b.saveGrantLocked(ctx, s, g); perr != nil {
			b.logger.Error("marking grant invalid failed", "grant", g.Name, "error", perr)
		}
		b.logger.Warn("provider rejected the refresh token; grant marked invalid", "grant", g.Name, "provider", g.Provider, "interrupted_refresh", interrupted)
		msg := fmt.Sprintf("grant %q is invalid: provider %q said invalid_grant; re-authorization is needed", g.Name, g.Provider)
		if interrupted {
			msg = fmt.Sprintf("grant %q is invalid: %s", g.Name, interruptedRefreshHelp)
		}
		return logical.CodedError(http.StatusBadRequest, msg)
	}
	if len(scopes) == 0 {
		scopes = g.Scopes
	}
	mapped := upstreamError(g.Provider, err, scopes)
	g.recordError(mapped.Error())
	// The token was answered with an error: the stored one is still live,
	// unless the answer never came (a timeout), which keeps the mark.
	if e, ok := oauthclient.AsError(err); ok && e.StatusCode != 0 {
		g.RefreshStartedAt = time.Time{}
	}
	if perr := b.storeGrant(ctx, s, g); perr != nil && !isReadOnlyErr(perr) {
		b.logger.Warn("recording refresh error failed", "grant", g.Name, "error", perr)
	}
	b.logger.Warn("refresh failed", "grant", g.Name, "provider", g.Provider, "error", mapped)
	return mapped
}

// expireGrantLocked marks a grant whose max_age or idle_timeout ran out:
// its revocation is queued first, so a failure between the two writes
// leaves a queued revocation, never an expired grant with a live token.
func (b *backend) expireGrantLocked(ctx context.Context, s logical.Storage, g *grantEntry, why string) error {
	if err := queueRevocation(ctx, s, g.Name, b.now()); err != nil {
		b.logger.Error("queueing revocation of expired grant failed; will retry", "grant", g.Name, "error", err)
		return err
	}
	g.expire(why)
	if err := b.saveGrantLocked(ctx, s, g); err != nil {
		b.logger.Error("marking grant expired failed; will retry", "grant", g.Name, "error", err)
		return err
	}
	b.background.wake()
	return nil
}

// keepAlive refreshes a grant so that an idle refresh token does not lapse
// upstream. The access token it gets goes to nobody: it is revoked where
// that cannot hurt the grant, or left to expire.
func (b *backend) keepAlive(ctx context.Context, s logical.Storage, name string) error {
	r, err := b.refreshGrant(ctx, s, name, refreshRequest{keepAlive: true})
	if err != nil {
		return err
	}
	if r.provider.entry.canRevoke(true) {
		if err := r.provider.client.Revoke(ctx, r.token.AccessToken, oauthclient.HintAccessToken); err != nil {
			b.logger.Debug("revoking keep_alive access token failed", "grant", name, "error", err)
		}
	}
	return nil
}
