package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/backend/oauthclient"
)

// A pending authorization waits for a user: the browser's return to
// callback (code flow) or the user's approval of a device code (device
// flow, polled by the background worker). Its secrets are sealed.
const pendingPrefix = "pending/"

// How long a started authorization-code flow may take.
const authorizationLifetime = 10 * time.Minute

const (
	pendingCode   = "code"
	pendingDevice = "device"
)

type pendingAuth struct {
	Kind        string    `json:"kind"`
	Grant       string    `json:"grant"`
	GrantID     string    `json:"grant_id"`
	Provider    string    `json:"provider"`
	RedirectURI string    `json:"redirect_uri,omitempty"`
	Scopes      []string  `json:"scopes,omitempty"`
	Secret      *sealed   `json:"secret"` // code verifier, or device code
	ExpiresAt   time.Time `json:"expires_at"`
	Interval    int64     `json:"interval,omitempty"` // seconds, device flow
	NextPoll    time.Time `json:"next_poll,omitempty"`
}

// pendingKeyForState hashes the state: storage keys never hold it.
func pendingKeyForState(state string) string {
	sum := sha256.Sum256([]byte(state))
	return "code-" + hex.EncodeToString(sum[:])
}

func pendingKeyForDevice(grant string) string { return "device-" + grant }

func pendingAAD(key string) string { return "pending/" + key }

func (b *backend) loadPending(ctx context.Context, s logical.Storage, key string) (*pendingAuth, error) {
	p := &pendingAuth{}
	ok, err := getJSON(ctx, s, pendingPrefix+key, p)
	if err != nil || !ok {
		return nil, err
	}
	return p, nil
}

// startPending checks the mount's limit and prepares the grant a flow will
// complete: a new grant is created as pending; an existing one keeps
// working until the flow replaces its refresh token.
func (b *backend) startPending(ctx context.Context, s logical.Storage, cfg *configEntry, g *grantEntry, creating bool) error {
	keys, err := s.List(ctx, pendingPrefix)
	if err != nil {
		return err
	}
	if len(keys) >= cfg.MaxPendingAuthorizations {
		return logical.CodedError(429, fmt.Sprintf("%d authorizations are pending (max_pending_authorizations); try again later", len(keys)))
	}
	if !creating {
		return nil // untouched until the flow completes
	}
	g.Status = statusPending
	return b.putGrant(ctx, s, g)
}

// completeGrant stores the refresh token a finished flow produced.
func (b *backend) completeGrant(ctx context.Context, s logical.Storage, p *pendingAuth, tok *oauthclient.Token) (*grantEntry, error) {
	unlock := b.grantLocks.Lock(p.Grant)
	defer unlock()
	g, err := getGrant(ctx, s, p.Grant)
	if err != nil {
		return nil, err
	}
	if g == nil || g.ID != p.GrantID {
		return nil, logical.CodedError(400, fmt.Sprintf("grant %q was deleted or re-created while its authorization was pending; start again", p.Grant))
	}
	if tok.RefreshToken == "" {
		return nil, b.failPending(ctx, s, g, fmt.Sprintf("provider %q returned no refresh token; request offline access (e.g. the offline_access scope)", p.Provider))
	}
	kr, err := b.sealingKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	if g.RefreshToken, err = kr.seal(tok.RefreshToken, g.aad()); err != nil {
		return nil, err
	}
	switch {
	case tok.ScopeReturned:
		g.Scopes = normalizeScopes(tok.Scopes)
	case len(p.Scopes) > 0:
		g.Scopes = p.Scopes
	}
	g.Status, g.LastError = statusActive, ""
	if err := b.schedule(ctx, s, g); err != nil {
		return nil, err
	}
	if err := b.putGrant(ctx, s, g); err != nil {
		return nil, err
	}
	b.logger.Info("authorization completed", "grant", g.Name, "provider", p.Provider)
	return g, nil
}

// failPending records why a flow failed. A grant that only existed for the
// flow becomes invalid; a working grant is left as it was.
func (b *backend) failPending(ctx context.Context, s logical.Storage, g *grantEntry, why string) error {
	if g.Status == statusPending {
		g.Status = statusInvalid
	}
	g.LastError = why
	if err := b.putGrant(ctx, s, g); err != nil {
		return err
	}
	return logical.CodedError(400, fmt.Sprintf("grant %q: %s", g.Name, why))
}

func (b *backend) failPendingByName(ctx context.Context, s logical.Storage, p *pendingAuth, why string) {
	unlock := b.grantLocks.Lock(p.Grant)
	defer unlock()
	g, err := getGrant(ctx, s, p.Grant)
	if err != nil || g == nil || g.ID != p.GrantID {
		return
	}
	_ = b.failPending(ctx, s, g, why)
}

// sweepPending drops expired flows and polls device flows that are due; it
// returns when the next poll is due.
func (w *backgroundWorker) sweepPending(ctx context.Context, s logical.Storage, st *tidyStatus) time.Time {
	b := w.b
	keys, err := s.List(ctx, pendingPrefix)
	if err != nil {
		st.LastError = err.Error()
		return time.Time{}
	}
	var next time.Time
	for _, key := range keys {
		p, err := b.loadPending(ctx, s, key)
		if err != nil || p == nil {
			continue
		}
		now := time.Now()
		if !now.Before(p.ExpiresAt) {
			if err := s.Delete(ctx, pendingPrefix+key); err == nil {
				b.failPendingByName(ctx, s, p, "the authorization was not completed in time; start it again")
			}
			continue
		}
		if p.Kind != pendingDevice {
			continue
		}
		if now.Before(p.NextPoll) {
			next = earliest(next, p.NextPoll)
			continue
		}
		if poll := w.pollDevice(ctx, s, key, p); !poll.IsZero() {
			next = earliest(next, poll)
		}
	}
	return next
}

// pollDevice asks the token endpoint once whether the user has approved
// (RFC 8628 §3.4-3.5) and returns the next poll time, zero when done.
func (w *backgroundWorker) pollDevice(ctx context.Context, s logical.Storage, key string, p *pendingAuth) time.Time {
	b := w.b
	h, err := b.provider(ctx, s, p.Provider)
	if err == nil {
		var kr *keyring
		if kr, err = b.sealingKeys(ctx, s); err == nil {
			var deviceCode string
			if deviceCode, err = kr.open(p.Secret, pendingAAD(key)); err == nil {
				var tok *oauthclient.Token
				tok, err = h.client.PollDevice(ctx, deviceCode)
				if err == nil {
					if err := s.Delete(ctx, pendingPrefix+key); err != nil {
						b.logger.Error("deleting finished device flow failed", "grant", p.Grant, "error", err)
					}
					if _, err := b.completeGrant(ctx, s, p, tok); err != nil {
						b.logger.Warn("device flow could not complete the grant", "grant", p.Grant, "error", err)
					}
					return time.Time{}
				}
			}
		}
	}
	switch {
	case oauthclient.HasCode(err, oauthclient.ErrCodeAuthorizationPending):
	case oauthclient.HasCode(err, oauthclient.ErrCodeSlowDown):
		p.Interval += 5 // RFC 8628 §3.5
	case oauthclient.HasCode(err, oauthclient.ErrCodeAccessDenied), oauthclient.HasCode(err, oauthclient.ErrCodeExpiredToken):
		_ = s.Delete(ctx, pendingPrefix+key)
		b.failPendingByName(ctx, s, p, "the device authorization was denied or expired upstream; start it again")
		return time.Time{}
	default:
		b.logger.Warn("device flow poll failed; will poll again", "grant", p.Grant, "error", err)
	}
	p.NextPoll = time.Now().Add(time.Duration(p.Interval) * time.Second)
	if err := putJSON(ctx, s, pendingPrefix+key, p); err != nil {
		b.logger.Warn("storing device flow state failed", "grant", p.Grant, "error", err)
	}
	return p.NextPoll
}
