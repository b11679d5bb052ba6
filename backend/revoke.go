package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

// revocationMarker queues a grant whose refresh token must be revoked
// upstream; the background worker retries it until the upstream answers.
type revocationMarker struct {
	QueuedAt    time.Time `json:"queued_at"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt"`
}

func queueRevocation(ctx context.Context, s logical.Storage, name string, now time.Time) error {
	m, err := getRevocationMarker(ctx, s, name)
	if err != nil || m != nil {
		return err
	}
	now = now.UTC()
	return putJSON(ctx, s, revokingPath(name), &revocationMarker{QueuedAt: now, NextAttempt: now})
}

// outstandingToken is an access token that a lease will revoke at its end,
// remembered so that deleting the grant can revoke it too (on servers where
// revoking the refresh token leaves access tokens alive).
type outstandingToken struct {
	AccessToken *sealed `json:"access_token"`
	// Expiry is zero when the upstream did not say: such a token counts
	// as live until it is revoked.
	Expiry time.Time `json:"expiry,omitempty"`
}

// live says whether the token may still work upstream at now.
func (t *outstandingToken) live(now time.Time) bool {
	return t.Expiry.IsZero() || now.Before(t.Expiry)
}

// providerOwner is the outstanding-token owner of tokens that belong to a
// provider's client rather than to a grant (client_credentials). Grant IDs
// are hex, so the two never collide.
func providerOwner(provider string) string { return "provider-" + provider }

// outstandingOwner is the owner a lease's token is remembered under.
func (ld *leaseData) outstandingOwner() string {
	if ld.GrantID != "" {
		return ld.GrantID
	}
	return providerOwner(ld.Provider)
}

func (b *backend) rememberOutstanding(ctx context.Context, s logical.Storage, owner, tokenID string, tok *oauthclient.Token) error {
	path := outstandingPath(owner, tokenID)
	unlock := b.recordLocks.Lock(path)
	defer unlock()
	ot := &outstandingToken{Expiry: tok.Expiry}
	return b.storeSealed(ctx, s, path, ot, func(kr *keyring) (err error) {
		ot.AccessToken, err = kr.seal(tok.AccessToken, tokenAAD(path))
		return err
	})
}

// revokeGrantUpstream revokes g's refresh token and its outstanding access
// tokens, then erases the grant (delete) or keeps it as expired (max_age,
// idle_timeout). The caller holds the grant's lock. On failure the grant
// keeps its status and last_error says why; the marker stays queued.
func (b *backend) revokeGrantUpstream(ctx context.Context, s logical.Storage, g *grantEntry) (*logical.Response, error) {
	fail := func(err error) (*logical.Response, error) {
		b.metrics.grantRevocations.inc(g.Provider, "failed")
		b.lifecycle(eventRevocationFailed, g, err.Error())
		g.recordError(err.Error())
		if perr := b.storeGrant(ctx, s, g); perr != nil {
			b.logger.Warn("recording revocation error failed", "grant", g.Name, "error", perr)
			if g.newRefreshToken != "" {
				b.keepUnsaved(g)
			}
		}
		return nil, err
	}
	h, err := b.provider(ctx, s, g.Provider)
	if err != nil {
		if errors.Is(err, errUnknownProvider) {
			return fail(fmt.Errorf("provider %q no longer exists, so the refresh token cannot be revoked; erase the grant with force=true", g.Provider))
		}
		return fail(err)
	}
	var warnings []string
	if !g.boundTo(h.entry) {
		warnings = append(warnings, fmt.Sprintf("provider %q was moved to other endpoints since grant %q was authorized: its refresh token was not sent there and is not revoked upstream", g.Provider, g.Name))
	} else if h.entry.endpoints().Revocation == "" || h.entry.revocationStyle() == oauthclient.RevokeNone {
		warnings = append(warnings, fmt.Sprintf("provider %q cannot revoke tokens (no revocation_url, or revocation_style none): the refresh token was not revoked upstream", g.Provider))
	} else if !g.RefreshToken.isZero() {
		kr, err := b.sealingKeys(ctx, s)
		if err != nil {
			return nil, err
		}
		refreshToken, err := kr.open(g.RefreshToken, g.aad())
		if err != nil {
			return fail(fmt.Errorf("unsealing refresh token: %w", err))
		}
		replacement, err := h.client.RevokeGrant(ctx, refreshToken)
		if replacement != "" && replacement != refreshToken {
			// The revocation refreshed first (GitHub, Slack) and then
			// failed: the rotated token is the grant now; the retry needs it.
			g.newRefreshToken = replacement
		}
		if err != nil {
			if !revocationIsFinal(err) {
				return fail(upstreamError(g.Provider, err, nil))
			}
			// No retry can revoke it: say so and finish, or the grant
			// would stay revoking for ever.
			warnings = append(warnings, fmt.Sprintf("provider %q cannot revoke refresh tokens (%s): the refresh token was not revoked upstream", g.Provider, err))
		}
		if err := b.revokeOutstanding(ctx, s, h, g.ID); err != nil {
			return fail(upstreamError(g.Provider, err, nil))
		}
	}
	if len(warnings) > 0 {
		b.metrics.grantRevocations.inc(g.Provider, "not_revocable")
		b.lifecycle(eventNotRevocable, g, strings.Join(warnings, "; "))
	} else {
		b.metrics.grantRevocations.inc(g.Provider, "revoked")
		b.lifecycle(eventRevoked, g, map[bool]string{true: "deleted", false: "expired"}[g.EraseAfterRevoke])
	}
	if err := b.finishRevocation(ctx, s, g); err != nil {
		return nil, err
	}
	if len(warnings) == 0 {
		return nil, nil
	}
	return &logical.Response{Warnings: warnings}, nil
}

// revokeOutstanding revokes every live access token that leases of owner
// (a grant ID, or providerOwner) still hold, and forgets it.
func (b *backend) revokeOutstanding(ctx context.Context, s logical.Storage, h *providerHandle, owner string) error {
	ids, err := s.List(ctx, outstandingDir(owner))
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return err
	}
	for _, id := range ids {
		path := outstandingPath(owner, id)
		ot, err := getOutstanding(ctx, s, path)
		if err != nil {
			return err
		}
		if ot != nil && ot.live(b.now()) {
			token, err := kr.open(ot.AccessToken, tokenAAD(path))
			if err != nil {
				return err
			}
			if err := h.client.Revoke(ctx, token, oauthclient.HintAccessToken); err != nil && !revocationIsFinal(err) {
				return err
			}
		}
		if err := s.Delete(ctx, path); err != nil {
			return err
		}
	}
	return nil
}

func (b *backend) finishRevocation(ctx context.Context, s logical.Storage, g *grantEntry) error {
	if g.EraseAfterRevoke {
		return b.eraseGrant(ctx, s, g)
	}
	g.revokedUpstream()
	if err := b.saveGrantLocked(ctx, s, g); err != nil { // drops its due entry
		return err
	}
	return s.Delete(ctx, revokingPath(g.Name))
}

// revokeAccessToken revokes a lease's token upstream (RFC 7009) and forgets
// it. An expired token needs no call.
func (b *backend) revokeAccessToken(ctx context.Context, s logical.Storage, ld *leaseData) error {
	if ld.ExpiresAt.IsZero() || b.now().Before(ld.ExpiresAt) {
		h, err := b.provider(ctx, s, ld.Provider)
		if errors.Is(err, errUnknownProvider) {
			b.logger.Error("cannot revoke token: its provider was deleted", "role", ld.Role, "provider", ld.Provider)
			return logical.ErrUnrecoverable
		}
		if err != nil {
			return err
		}
		if err := h.client.Revoke(ctx, ld.AccessToken, oauthclient.HintAccessToken); err != nil {
			if revocationIsFinal(err) {
				b.logger.Error("provider cannot revoke the token", "role", ld.Role, "provider", ld.Provider, "error", err)
				return logical.ErrUnrecoverable
			}
			b.logger.Warn("revoking token upstream failed; Vault will retry", "role", ld.Role, "provider", ld.Provider, "error", err)
			return fmt.Errorf("revoking token at provider %q: %w", ld.Provider, err)
		}
	}
	if ld.TokenID != "" {
		if err := s.Delete(ctx, outstandingPath(ld.outstandingOwner(), ld.TokenID)); err != nil {
			return err
		}
	}
	return nil
}

// releaseGrantLease takes a finished lease off its grant's count.
func (b *backend) releaseGrantLease(ctx context.Context, s logical.Storage, ld *leaseData) error {
	_, err := b.updateGrant(ctx, s, ld.Grant, func(g *grantEntry) error {
		if g.ID != ld.GrantID || g.ActiveLeases == 0 {
			return errUnchanged
		}
		g.ActiveLeases--
		return nil
	})
	if isNoGrant(err) || errors.Is(err, errUnchanged) {
		return nil
	}
	return err
}

// replacedToken is a refresh token that a new authorization replaced: it
// is revoked upstream like a deleted grant's (queued, retried), so that
// replacing a token never leaves the old one alive.
type replacedToken struct {
	Grant       string    `json:"grant"`
	GrantID     string    `json:"grant_id"`
	Provider    string    `json:"provider"`
	Binding     string    `json:"binding,omitempty"`
	Token       *sealed   `json:"token"`
	QueuedAt    time.Time `json:"queued_at"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt"`
}

func (t *replacedToken) sealedFields(path string) []sealedField {
	return []sealedField{{&t.Token, tokenAAD(path)}}
}

// queueReplaced queues g's current refresh token for revocation before a
// new one replaces it; the caller holds g's lock. It is queued first: the
// worker never revokes a token that is still the grant's own, so a crash
// before the grant's write loses nothing.
func (b *backend) queueReplaced(ctx context.Context, s logical.Storage, g *grantEntry) error {
	if g.RefreshToken.isZero() || g.Status == statusRevoking {
		return nil
	}
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return err
	}
	old, err := kr.open(g.RefreshToken, g.aad())
	if err != nil {
		return fmt.Errorf("grant %q: %w", g.Name, err)
	}
	path := replacedPath(g.ID, randomID())
	now := b.now().UTC()
	t := &replacedToken{Grant: g.Name, GrantID: g.ID, Provider: g.Provider, Binding: g.Binding, QueuedAt: now, NextAttempt: now}
	unlock := b.recordLocks.Lock(path)
	defer unlock()
	err = b.storeSealed(ctx, s, path, t, func(kr *keyring) (err error) {
		t.Token, err = kr.seal(old, tokenAAD(path))
		return err
	})
	if err == nil {
		b.background.wake()
	}
	return err
}

// revokeReplaced makes one attempt at revoking a replaced refresh token if
// it is due, and returns when the next attempt is due (zero when done).
func (b *backend) revokeReplaced(ctx context.Context, s logical.Storage, key string, interval time.Duration) (time.Time, error) {
	path := replacedPrefix + key
	t, err := getReplaced(ctx, s, path)
	if err != nil || t == nil {
		return time.Time{}, err
	}
	if b.now().Before(t.NextAttempt) {
		return t.NextAttempt, nil
	}
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return time.Time{}, err
	}
	token, err := kr.open(t.Token, tokenAAD(path))
	if err != nil {
		return time.Time{}, err
	}
	// Never revoke the grant's own token: the replacement may not have
	// been stored (a crash between the two writes).
	unlock := b.lockGrant(t.Grant)
	g, err := b.loadGrantLocked(ctx, s, t.Grant)
	if err == nil && g != nil && g.ID == t.GrantID && !g.RefreshToken.isZero() {
		if cur, oerr := kr.open(g.RefreshToken, g.aad()); oerr == nil && cur == token && g.newRefreshToken == "" {
			unlock()
			return time.Time{}, s.Delete(ctx, path)
		}
	}
	unlock()
	if err != nil {
		return time.Time{}, err
	}
	h, err := b.provider(ctx, s, t.Provider)
	switch {
	case errors.Is(err, errUnknownProvider):
		b.logger.Warn("replaced refresh token not revoked: its provider is gone", "grant", t.Grant, "provider", t.Provider)
		return time.Time{}, s.Delete(ctx, path)
	case err != nil:
		return t.NextAttempt, err
	case t.Binding != "" && t.Binding != h.entry.binding():
		b.logger.Warn("replaced refresh token not revoked: its provider moved to other endpoints", "grant", t.Grant, "provider", t.Provider)
		return time.Time{}, s.Delete(ctx, path)
	case h.entry.endpoints().Revocation == "":
		return time.Time{}, s.Delete(ctx, path)
	}
	err = h.client.Revoke(ctx, token, oauthclient.HintRefreshToken)
	if errors.Is(err, oauthclient.ErrRevokesWholeGrant) {
		// Revoking it would end the authorization that replaced it too.
		b.logger.Warn("replaced refresh token not revoked: the provider revokes refresh tokens only with the whole authorization", "grant", t.Grant, "provider", t.Provider)
	}
	if err != nil && !revocationIsFinal(err) {
		t.Attempts++
		t.NextAttempt = b.now().Add(retryBackoff(t.Attempts, interval)).UTC()
		unlock := b.recordLocks.Lock(path)
		defer unlock()
		if perr := b.storeSealed(ctx, s, path, t, nil); perr != nil {
			return time.Time{}, perr
		}
		return t.NextAttempt, fmt.Errorf("revoking a replaced refresh token of grant %q: %w", t.Grant, upstreamError(t.Provider, err, nil))
	}
	b.logger.Info("replaced refresh token revoked upstream", "grant", t.Grant, "provider", t.Provider)
	return time.Time{}, s.Delete(ctx, path)
}

// deleteGrant revokes the grant's refresh token upstream and erases it;
// when the upstream cannot be reached the grant stays revoking and the
// worker retries. force erases without contacting upstream.
func (b *backend) deleteGrant(ctx context.Context, s logical.Storage, name string, force bool) (*logical.Response, error) {
	ctx = detached(ctx)
	unlock := b.lockGrant(name)
	defer unlock()

	g, err := b.loadGrantLocked(ctx, s, name)
	if err != nil || g == nil {
		return nil, err
	}
	if force {
		if err := b.eraseGrant(ctx, s, g); err != nil {
			return nil, err
		}
		b.lifecycle(eventErased, g, "force=true: nothing was revoked upstream")
		return &logical.Response{Warnings: []string{"grant erased without revoking anything upstream (force=true)"}}, nil
	}
	if err := queueRevocation(ctx, s, name, b.now()); err != nil {
		return nil, err
	}
	g.startRevoking()
	if err := b.saveGrantLocked(ctx, s, g); err != nil {
		return nil, err
	}
	done, err := b.revokeGrantUpstream(ctx, s, g)
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
