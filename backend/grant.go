package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Grant statuses.
const (
	statusPending  = "pending"
	statusActive   = "active"
	statusInvalid  = "invalid"
	statusExpired  = "expired"
	statusRevoked  = "revoked"
	statusRevoking = "revoking"
)

// grantEntry is one upstream grant: the sealed refresh token and its
// lifecycle metadata. Only the engine ever sees the refresh token.
type grantEntry struct {
	Name string `json:"name"`
	// ID is random per grant; it is part of the sealing AAD and of lease
	// data, so a re-created grant of the same name is a different grant.
	ID           string  `json:"id"`
	Provider     string  `json:"provider"`
	Status       string  `json:"status"`
	RefreshToken *sealed `json:"refresh_token,omitempty"`

	Scopes        []string      `json:"scopes,omitempty"`
	CreatedAt     time.Time     `json:"created_at"`
	LastRefreshAt time.Time     `json:"last_refresh_at,omitempty"`
	LastUsedAt    time.Time     `json:"last_used_at,omitempty"`
	RefreshCount  int64         `json:"refresh_count"`
	RotationCount int64         `json:"rotation_count"`
	ActiveLeases  int64         `json:"active_leases"`
	MaxAge        time.Duration `json:"max_age,omitempty"`
	IdleTimeout   time.Duration `json:"idle_timeout,omitempty"`
	KeepAlive     time.Duration `json:"keep_alive,omitempty"`
	OwnerEntityID string        `json:"owner_entity_id,omitempty"`
	LastError     string        `json:"last_error,omitempty"`
	// DueAt is when the due index next looks at this grant (lifecycle.go).
	DueAt time.Time `json:"due_at,omitempty"`
	// Indexed is the status last written to the grant index.
	Indexed string `json:"indexed,omitempty"`
	// EraseAfterRevoke is set by delete: once the refresh token is revoked
	// upstream the entry goes away. Without it (max_age, idle_timeout) the
	// entry stays, marked expired, for the record.
	EraseAfterRevoke bool `json:"erase_after_revoke,omitempty"`
}

func (g *grantEntry) aad() string { return grantAAD(g.Name, g.ID) }

// expiresAt is the end of the grant's absolute lifetime, zero if none.
func (g *grantEntry) expiresAt() time.Time {
	if g.MaxAge <= 0 {
		return time.Time{}
	}
	return g.CreatedAt.Add(g.MaxAge)
}

// lapsed says whether max_age or idle_timeout has run out at now.
func (g *grantEntry) lapsed(now time.Time) string {
	if exp := g.expiresAt(); !exp.IsZero() && !now.Before(exp) {
		return "max_age reached"
	}
	if g.IdleTimeout > 0 {
		last := g.LastUsedAt
		if last.IsZero() {
			last = g.CreatedAt
		}
		if now.Sub(last) >= g.IdleTimeout {
			return "idle_timeout reached"
		}
	}
	return ""
}

// unusableError says why a grant cannot issue tokens now, nil if it can.
// It is what both issue and renewal check: zero trust, every time.
func (b *backend) unusableError(g *grantEntry, now time.Time) error {
	switch g.Status {
	case statusActive:
	case statusRevoking:
		return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("grant %q is being revoked", g.Name))
	case statusPending:
		return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("grant %q is pending: its authorization has not completed", g.Name))
	default:
		return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("grant %q is %s (%s); re-authorization is needed", g.Name, g.Status, g.LastError))
	}
	if why := g.lapsed(now); why != "" {
		return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("grant %q has expired (%s); re-authorization is needed", g.Name, why))
	}
	if g.OwnerEntityID != "" {
		entity, err := b.System().EntityInfo(g.OwnerEntityID)
		if err != nil {
			return fmt.Errorf("looking up owner entity of grant %q: %w", g.Name, err)
		}
		if entity == nil {
			return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("grant %q: owner entity %s no longer exists; re-authorization is needed", g.Name, g.OwnerEntityID))
		}
		if entity.Disabled {
			return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("grant %q: owner entity %s is disabled; re-authorization is needed", g.Name, g.OwnerEntityID))
		}
	}
	return nil
}

func errNoGrant(name string) error {
	return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("grant %q does not exist", name))
}

func getGrant(ctx context.Context, s logical.Storage, name string) (*grantEntry, error) {
	g := &grantEntry{}
	ok, err := getJSON(ctx, s, grantPrefix+name, g)
	if err != nil {
		return nil, fmt.Errorf("reading grant %q: %w", name, err)
	}
	if !ok {
		return nil, nil
	}
	return g, nil
}

// putGrant stores g and refreshes its cached copy, if it has one. Callers
// hold the grant's lock.
func (b *backend) putGrant(ctx context.Context, s logical.Storage, g *grantEntry) error {
	if g.Indexed != g.Status {
		if err := b.indexGrant(ctx, s, g); err != nil {
			return err
		}
		g.Indexed = g.Status
	}
	if err := putJSON(ctx, s, grantPrefix+g.Name, g); err != nil {
		return fmt.Errorf("storing grant %q: %w", g.Name, err)
	}
	b.cacheMu.Lock()
	if _, ok := b.grants[g.Name]; ok {
		cp := *g
		b.grants[g.Name] = &cp
	}
	b.cacheMu.Unlock()
	return nil
}

func (b *backend) dropGrant(name string) {
	b.cacheMu.Lock()
	delete(b.grants, name)
	b.cacheMu.Unlock()
}

// checkedGrant returns the named grant if it may issue tokens now: the
// zero-trust check of a lease that needs no refresh (token_reuse). It reads
// a cached copy that every write of the grant keeps current, so the hot
// path costs no storage read; only grants used this way are cached. The
// result is shared: do not modify it.
func (b *backend) checkedGrant(ctx context.Context, s logical.Storage, name string) (*grantEntry, error) {
	b.cacheMu.RLock()
	g := b.grants[name]
	b.cacheMu.RUnlock()
	if g == nil {
		unlock := b.grantLocks.Lock(name)
		var err error
		g, err = getGrant(ctx, s, name)
		if err == nil && g != nil {
			b.cacheMu.Lock()
			b.grants[name] = g
			b.cacheMu.Unlock()
		}
		unlock()
		if err != nil {
			return nil, err
		}
		if g == nil {
			return nil, errNoGrant(name)
		}
	}
	now := time.Now()
	if err := b.unusableError(g, now); err != nil {
		return nil, err
	}
	// idle_timeout counts uses that needed no refresh too; record them
	// often enough for it, not on every lease.
	if g.IdleTimeout > 0 && now.Sub(g.LastUsedAt) > g.IdleTimeout/10 {
		b.touchGrant(ctx, s, name, now)
	}
	return g, nil
}

func (b *backend) touchGrant(ctx context.Context, s logical.Storage, name string, now time.Time) {
	unlock := b.grantLocks.Lock(name)
	defer unlock()
	g, err := getGrant(ctx, s, name)
	if err != nil || g == nil {
		return
	}
	g.LastUsedAt = now.UTC()
	if err := b.putGrant(ctx, s, g); err != nil {
		b.logger.Warn("recording grant use failed", "grant", name, "error", err)
	}
}

func randomID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b)
}

func parseAbsoluteURI(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if !u.IsAbs() {
		return nil, errors.New("must be an absolute URI")
	}
	return u, nil
}
