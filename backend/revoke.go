package backend

import (
	"context"
	"errors"
	"fmt"
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

func queueRevocation(ctx context.Context, s logical.Storage, name string) error {
	var m revocationMarker
	ok, err := getJSON(ctx, s, revokingPrefix+name, &m)
	if err != nil || ok {
		return err
	}
	now := time.Now().UTC()
	return putJSON(ctx, s, revokingPrefix+name, &revocationMarker{QueuedAt: now, NextAttempt: now})
}

// outstandingToken is an access token that a lease will revoke at its end,
// remembered so that deleting the grant can revoke it too (on servers where
// revoking the refresh token leaves access tokens alive).
type outstandingToken struct {
	AccessToken *sealed   `json:"access_token"`
	Expiry      time.Time `json:"expiry,omitempty"`
}

func outstandingPath(grantID, tokenID string) string {
	return outstandingPfx + grantID + "/" + tokenID
}

func (b *backend) rememberOutstanding(ctx context.Context, s logical.Storage, grantID, tokenID string, tok *oauthclient.Token) error {
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return err
	}
	path := outstandingPath(grantID, tokenID)
	st, err := kr.seal(tok.AccessToken, tokenAAD(path))
	if err != nil {
		return err
	}
	return putJSON(ctx, s, path, &outstandingToken{AccessToken: st, Expiry: tok.Expiry})
}

// revokeGrantUpstream revokes g's refresh token and its outstanding access
// tokens, then erases the grant (delete) or keeps it as expired (max_age,
// idle_timeout). The caller holds the grant's lock. On failure the grant
// keeps its status and last_error says why; the marker stays queued.
func (b *backend) revokeGrantUpstream(ctx context.Context, s logical.Storage, g *grantEntry) (*logical.Response, error) {
	fail := func(err error) (*logical.Response, error) {
		g.LastError = err.Error()
		if perr := b.putGrant(ctx, s, g); perr != nil {
			b.logger.Warn("recording revocation error failed", "grant", g.Name, "error", perr)
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
	if h.entry.endpoints().Revocation == "" {
		warnings = append(warnings, fmt.Sprintf("provider %q has no revocation_url: the refresh token was not revoked upstream", g.Provider))
	} else if !g.RefreshToken.isZero() {
		kr, err := b.sealingKeys(ctx, s)
		if err != nil {
			return nil, err
		}
		refreshToken, err := kr.open(g.RefreshToken, g.aad())
		if err != nil {
			return fail(fmt.Errorf("unsealing refresh token: %w", err))
		}
		if err := h.client.Revoke(ctx, refreshToken, oauthclient.HintRefreshToken); err != nil {
			return fail(upstreamError(g.Provider, err, nil))
		}
		if err := b.revokeOutstanding(ctx, s, h, g.ID); err != nil {
			return fail(upstreamError(g.Provider, err, nil))
		}
	}
	if err := b.finishRevocation(ctx, s, g); err != nil {
		return nil, err
	}
	b.logger.Info("grant revoked upstream", "grant", g.Name, "provider", g.Provider, "erased", g.EraseAfterRevoke)
	if len(warnings) == 0 {
		return nil, nil
	}
	return &logical.Response{Warnings: warnings}, nil
}

func (b *backend) revokeOutstanding(ctx context.Context, s logical.Storage, h *providerHandle, grantID string) error {
	ids, err := s.List(ctx, outstandingPfx+grantID+"/")
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
		path := outstandingPath(grantID, id)
		var ot outstandingToken
		ok, err := getJSON(ctx, s, path, &ot)
		if err != nil {
			return err
		}
		if ok && time.Now().Before(ot.Expiry) {
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
	g.Status = statusExpired
	g.RefreshToken = nil
	if err := b.schedule(ctx, s, g); err != nil { // drops its due entry
		return err
	}
	if err := b.putGrant(ctx, s, g); err != nil {
		return err
	}
	return s.Delete(ctx, revokingPrefix+g.Name)
}

// eraseGrant removes every trace of g from storage.
func (b *backend) eraseGrant(ctx context.Context, s logical.Storage, g *grantEntry) error {
	ids, err := s.List(ctx, outstandingPfx+g.ID+"/")
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := s.Delete(ctx, outstandingPath(g.ID, id)); err != nil {
			return err
		}
	}
	if !g.DueAt.IsZero() {
		if err := s.Delete(ctx, duePath(g.DueAt, g.Name)); err != nil {
			return err
		}
	}
	if err := s.Delete(ctx, grantPrefix+g.Name); err != nil {
		return err
	}
	b.dropGrant(g.Name)
	if err := b.unindexGrant(ctx, s, g.Name); err != nil {
		return err
	}
	return s.Delete(ctx, revokingPrefix+g.Name)
}
