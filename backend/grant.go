package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Grant statuses. docs/lifecycle.md draws the transitions; the methods
// below are the only code that changes a grant's status.
const (
	statusPending  = "pending"  // created by authorize/device; no token yet
	statusActive   = "active"   // issues tokens
	statusInvalid  = "invalid"  // upstream said invalid_grant, or a flow failed
	statusExpired  = "expired"  // max_age / idle_timeout; refresh token revoked (or queued)
	statusRevoking = "revoking" // deleted; waiting for the upstream revocation
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
	// DueAt is when the due index next looks at this grant (index.go).
	DueAt time.Time `json:"due_at,omitempty"`
	// Indexed is the status last written to the grant index, Index the
	// whole entry (index.go).
	Indexed string          `json:"indexed,omitempty"`
	Index   grantIndexEntry `json:"index,omitempty"`
	// EraseAfterRevoke is set by delete: once the refresh token is revoked
	// upstream the entry goes away. Without it (max_age, idle_timeout) the
	// entry stays, marked expired, for the record.
	EraseAfterRevoke bool `json:"erase_after_revoke,omitempty"`
	// RefreshStartedAt is stored before a refresh calls upstream and
	// cleared with its result: found set by the next refresh, it means a
	// refresh died after sending the token (a crash), so the stored token
	// may already have been rotated away upstream.
	RefreshStartedAt time.Time `json:"refresh_started_at,omitempty"`
	// Binding is the provider binding (provider.go) the refresh token was
	// authorized under: the token is never sent anywhere else.
	Binding string `json:"binding,omitempty"`
	// Subject is the upstream subject (sub) that authorized the grant,
	// where the provider reports it.
	Subject string `json:"subject,omitempty"`
	// PendingUntil is when a pending grant whose flow never completed is
	// given up as invalid (the due index brings the sweep to it).
	PendingUntil time.Time `json:"pending_until,omitempty"`
	// RefreshExpiresAt is when the refresh token itself dies upstream,
	// where the provider says (refresh_token_expires_in): the worker
	// refreshes before then so that a rotation renews it.
	RefreshExpiresAt time.Time `json:"refresh_expires_at,omitempty"`

	// newRefreshToken is a refresh token to seal when the grant is next
	// stored (storeGrant): sealing and storing are one step that keys/rotate
	// cannot split. Never stored in plain text.
	newRefreshToken string
}

func (g *grantEntry) aad() string { return grantAAD(g.Name, g.ID) }

// newGrant is a grant that has no token yet.
func newGrant(name, provider, owner string, now time.Time) *grantEntry {
	return &grantEntry{Name: name, ID: randomID(), Provider: provider, CreatedAt: now.UTC(), OwnerEntityID: owner}
}

// The named transitions.

// activate gives the grant a new refresh token from an import or a
// completed authorization: a new authorization starts the lifecycle clocks
// again, so re-importing into an expired grant does not expire it at once.
func (g *grantEntry) activate(refreshToken string, refreshExpiry time.Time, binding string, now time.Time) {
	g.newRefreshToken, g.Binding = refreshToken, binding
	g.RefreshExpiresAt = refreshExpiry.UTC()
	g.Status, g.LastError = statusActive, ""
	g.CreatedAt, g.LastUsedAt, g.LastRefreshAt = now.UTC(), time.Time{}, time.Time{}
	g.RefreshStartedAt, g.PendingUntil = time.Time{}, time.Time{}
	g.EraseAfterRevoke = false
}

// attachSubject records who upstream authorized the grant's new token and
// returns a warning when it is not who authorized the old one: a
// re-authorization by another user hands that user's access to everyone
// who reads the grant's roles.
func (g *grantEntry) attachSubject(subject string) string {
	old := g.Subject
	g.Subject = subject
	if old != "" && subject != "" && old != subject {
		return fmt.Sprintf("grant %q was re-authorized by upstream subject %q; it was authorized by %q before", g.Name, subject, old)
	}
	return ""
}

// markPending: a grant created by a flow that has not completed; past
// until, the sweep gives it up.
func (g *grantEntry) markPending(until time.Time) {
	g.Status, g.PendingUntil = statusPending, until.UTC()
}

// markInvalid: the upstream refused the refresh token, or the flow that
// was to create the grant failed. Re-authorization is needed.
func (g *grantEntry) markInvalid(why string) {
	g.Status, g.LastError = statusInvalid, why
	g.RefreshStartedAt, g.PendingUntil = time.Time{}, time.Time{}
}

// failFlow records why an authorization failed: a grant that only existed
// for the flow becomes invalid, a working grant is left as it was.
func (g *grantEntry) failFlow(why string) {
	if g.Status == statusPending {
		g.markInvalid(why)
		return
	}
	g.LastError = why
}

// expire: max_age or idle_timeout ran out; the refresh token is revoked
// upstream by the queue (queueRevocation runs first).
func (g *grantEntry) expire(why string) { g.Status, g.LastError = statusExpired, why }

// startRevoking: the grant was deleted and waits for the upstream
// revocation of its refresh token; it is erased once that succeeded.
func (g *grantEntry) startRevoking() { g.Status, g.EraseAfterRevoke = statusRevoking, true }

// revokedUpstream: the refresh token of an expired grant is revoked; the
// entry stays for the record without it.
func (g *grantEntry) revokedUpstream() { g.Status, g.RefreshToken = statusExpired, nil }

// recordError keeps the last error without changing the status: only
// invalid_grant may do that.
func (g *grantEntry) recordError(msg string) { g.LastError = msg }

// boundTo says whether the grant's token may be sent to provider p. A
// grant stored before bindings existed is bound at its next use.
func (g *grantEntry) boundTo(p *providerEntry) bool {
	if g.Binding == "" {
		g.Binding = p.binding()
	}
	return g.Binding == p.binding()
}

// unboundError is why a grant whose provider moved is refused.
func unboundError(g *grantEntry) error {
	return logical.CodedError(http.StatusBadRequest, fmt.Sprintf(
		"grant %q: provider %q no longer has the endpoints this grant was authorized against, so its refresh token is not sent there; re-authorization is needed", g.Name, g.Provider))
}

// expiresAt is the end of the grant's absolute lifetime, zero if none.
func (g *grantEntry) expiresAt() time.Time {
	if g.MaxAge <= 0 {
		return time.Time{}
	}
	return g.CreatedAt.Add(g.MaxAge)
}

// renewDue is when the worker refreshes the grant so that its refresh
// token does not run out upstream: a tenth of its life, at most a day,
// before it would. Zero when the provider gave no refresh token lifetime.
func (g *grantEntry) renewDue() time.Time {
	if g.RefreshExpiresAt.IsZero() {
		return time.Time{}
	}
	life := g.RefreshExpiresAt.Sub(orCreated(g.LastRefreshAt, g))
	return g.RefreshExpiresAt.Add(-min(life/10, 24*time.Hour))
}

// shownExpiry is the grant's expires_at: the earlier of max_age and the
// refresh token's own end upstream.
func (g *grantEntry) shownExpiry() time.Time {
	exp := g.expiresAt()
	if r := g.RefreshExpiresAt; !r.IsZero() && (exp.IsZero() || r.Before(exp)) {
		return r
	}
	return exp
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
			b.lifecycle(eventOwnerOffboarded, g, "owner entity no longer exists")
			return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("grant %q: owner entity %s no longer exists; re-authorization is needed", g.Name, g.OwnerEntityID))
		}
		if entity.Disabled {
			b.lifecycle(eventOwnerOffboarded, g, "owner entity is disabled")
			return logical.CodedError(http.StatusBadRequest, fmt.Sprintf("grant %q: owner entity %s is disabled; re-authorization is needed", g.Name, g.OwnerEntityID))
		}
	}
	return nil
}

// noGrantError is a 400 for a grant that does not exist.
type noGrantError struct{ name string }

func (e *noGrantError) Error() string { return fmt.Sprintf("grant %q does not exist", e.name) }
func (e *noGrantError) Code() int     { return http.StatusBadRequest }

func errNoGrant(name string) error { return &noGrantError{name: name} }

func isNoGrant(err error) bool {
	var e *noGrantError
	return errors.As(err, &e)
}

// storeAnyway wraps a change's error when the change must still be stored
// (a failed refresh records last_error, or marks the grant invalid).
type storeAnyway struct{ err error }

func (e *storeAnyway) Error() string { return e.err.Error() }
func (e *storeAnyway) Unwrap() error { return e.err }

func keepAndFail(err error) error { return &storeAnyway{err: err} }

// lockGrant serialises everything that changes one grant; it is the
// grant's record lock (see the lock order on backend).
func (b *backend) lockGrant(name string) (unlock func()) {
	return b.recordLocks.Lock(grantPath(name))
}

// updateGrant is the one way a stored grant changes: lock, load, change,
// schedule, store. A change that returns an error leaves storage as it
// was, unless the error is keepAndFail(err).
func (b *backend) updateGrant(ctx context.Context, s logical.Storage, name string, change func(*grantEntry) error) (*grantEntry, error) {
	unlock := b.lockGrant(name)
	defer unlock()
	return b.updateGrantLocked(ctx, s, name, change)
}

func (b *backend) updateGrantLocked(ctx context.Context, s logical.Storage, name string, change func(*grantEntry) error) (*grantEntry, error) {
	g, err := b.loadGrantLocked(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if g == nil {
		return nil, errNoGrant(name)
	}
	cerr := change(g)
	var keep *storeAnyway
	if cerr != nil && !errors.As(cerr, &keep) {
		return g, cerr
	}
	if err := b.saveGrantLocked(ctx, s, g); err != nil {
		return nil, err
	}
	if keep != nil {
		return g, keep.err
	}
	return g, nil
}

// saveGrantLocked schedules and stores g; the caller holds its lock.
func (b *backend) saveGrantLocked(ctx context.Context, s logical.Storage, g *grantEntry) error {
	if err := b.schedule(ctx, s, g); err != nil {
		return err
	}
	return b.storeGrant(ctx, s, g)
}

// loadGrantLocked reads a grant as its writers must see it: a copy whose
// write failed after a refresh rotated its token (unsaved) wins over
// storage. The caller holds the grant's lock.
func (b *backend) loadGrantLocked(ctx context.Context, s logical.Storage, name string) (*grantEntry, error) {
	b.cacheMu.RLock()
	u := b.unsaved[name]
	b.cacheMu.RUnlock()
	if u != nil {
		cp := *u
		return &cp, nil
	}
	return getGrant(ctx, s, name)
}

// storeGrant writes g (sealing a new refresh token, if it has one) and,
// first, its grant index entry when that must change (needsIndexing), and
// keeps the cached copy current. The caller holds the grant's lock.
func (b *backend) storeGrant(ctx context.Context, s logical.Storage, g *grantEntry) error {
	var events []string
	if g.Indexed != g.Status {
		events = statusEvents(g.Indexed, g)
	}
	if entry := indexEntryOf(g); g.Indexed != g.Status || g.needsIndexing(entry) {
		if err := b.indexGrant(ctx, s, g, entry); err != nil {
			return err
		}
		g.Indexed, g.Index = g.Status, entry
	}
	err := b.storeSealed(ctx, s, grantPath(g.Name), g, func(kr *keyring) error {
		if g.newRefreshToken == "" {
			return nil
		}
		var err error
		g.RefreshToken, err = kr.seal(g.newRefreshToken, g.aad())
		return err
	})
	if err != nil {
		return fmt.Errorf("storing grant %q: %w", g.Name, err)
	}
	g.newRefreshToken = ""
	for _, event := range events {
		b.lifecycle(event, g, g.LastError)
	}
	b.cacheMu.Lock()
	delete(b.unsaved, g.Name)
	if _, ok := b.grants[g.Name]; ok {
		cp := *g
		b.grants[g.Name] = &cp
	}
	b.cacheMu.Unlock()
	return nil
}

// eraseGrant removes every trace of g from storage; the caller holds its
// lock.
func (b *backend) eraseGrant(ctx context.Context, s logical.Storage, g *grantEntry) error {
	b.forgetGrant(g)
	ids, err := s.List(ctx, outstandingDir(g.ID))
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
	if err := s.Delete(ctx, grantPath(g.Name)); err != nil {
		return err
	}
	b.cacheMu.Lock()
	delete(b.grants, g.Name)
	delete(b.unsaved, g.Name)
	b.cacheMu.Unlock()
	if err := b.unindexGrant(ctx, s, g.Name); err != nil {
		return err
	}
	return s.Delete(ctx, revokingPath(g.Name))
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
		unlock := b.lockGrant(name)
		var err error
		g, err = b.loadGrantLocked(ctx, s, name)
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
	now := b.now()
	if err := b.unusableError(g, now); err != nil {
		return nil, err
	}
	// Uses that needed no refresh (a shared token) count too: record them
	// often enough for idle_timeout and for the inventory's last_used_at
	// (unused_for is accurate to indexUseStep), not on every lease.
	every := indexUseStep
	if g.IdleTimeout > 0 {
		every = min(every, g.IdleTimeout/10)
	}
	if now.Sub(g.LastUsedAt) > every {
		_, err := b.updateGrant(ctx, s, name, func(g *grantEntry) error {
			g.LastUsedAt = now.UTC()
			return nil
		})
		if err != nil && !isNoGrant(err) {
			b.logger.Warn("recording grant use failed", "grant", name, "error", err)
		}
	}
	return g, nil
}

func randomID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b)
}

// errUnchanged is what a change returns when there is nothing to store.
var errUnchanged = errors.New("nothing to change")

// readGrant returns a grant as its next writer will see it, and whether
// that copy still waits to be stored.
func (b *backend) readGrant(ctx context.Context, s logical.Storage, name string) (*grantEntry, bool, error) {
	b.cacheMu.RLock()
	u := b.unsaved[name]
	b.cacheMu.RUnlock()
	if u != nil {
		cp := *u
		return &cp, true, nil
	}
	g, err := getGrant(ctx, s, name)
	return g, false, err
}

// checkOwner refuses an owner_entity_id that names no entity.
func (b *backend) checkOwner(id string) error {
	entity, err := b.System().EntityInfo(id)
	if err != nil {
		return err
	}
	if entity == nil {
		return badInputf("owner_entity_id: entity %q does not exist", id)
	}
	return nil
}
