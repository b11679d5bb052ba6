package backend

import (
	"sync"
	"time"
)

// Lifecycle events: one info line in the Vault server log for each step in
// a grant's life, always with the same keys (event, grant, grant_id,
// provider, owner_entity_id, reason), so that a SIEM can follow a grant
// from the log alone. No event carries a token.
const (
	eventCreated          = "grant.created"           // a grant record was stored for the first time
	eventAuthorized       = "grant.authorized"        // a refresh token was imported, or a flow completed
	eventRotated          = "grant.rotated"           // a refresh returned a new refresh token
	eventInvalid          = "grant.invalid"           // the upstream refused the token, or a flow failed
	eventExpired          = "grant.expired"           // max_age or idle_timeout ran out
	eventOwnerOffboarded  = "grant.owner_offboarded"  // a use was refused: the owner entity is disabled or gone
	eventRevocationQueued = "grant.revocation_queued" // deleted or expired: its refresh token awaits revocation
	eventRevoked          = "grant.revoked"           // the refresh token was revoked upstream (or could not be)
	eventRevocationFailed = "grant.revocation_failed" // an upstream revocation attempt failed; it is retried
	eventNotRevocable     = "grant.not_revocable"     // the provider cannot revoke it; nothing was revoked upstream
	eventErased           = "grant.erased"            // deleted with force=true: erased without revoking upstream
)

// lifecycle logs one event of g's life and counts it. Rotations not yet
// logged are logged first, so the log keeps the order of events.
func (b *backend) lifecycle(event string, g *grantEntry, reason string) {
	if n := b.events.takePending(g.Name, event == eventRevoked); n > 0 {
		b.logEvent(eventRotated, g, "use", n)
	}
	b.logEvent(event, g, reason, 1)
}

func (b *backend) logEvent(event string, g *grantEntry, reason string, times int) {
	b.metrics.lifecycleEvents.add(float64(times), event)
	args := []any{"event", event, "grant", g.Name, "grant_id", g.ID,
		"provider", g.Provider, "owner_entity_id", g.OwnerEntityID, "reason", reason}
	if event == eventRotated {
		args = append(args, "rotations", times)
	}
	b.logger.Info("grant lifecycle", args...)
}

// rotated logs a rotation. A rotating provider rotates on every refresh,
// hundreds a second under load, and each log line crosses from the plugin
// to Vault: a grant's rotations are logged at most once per
// rotationLogEvery, the line counting those since the last one (and any
// other event of the grant logs them first).
func (b *backend) rotated(g *grantEntry, reason string) {
	if n := b.events.countRotation(g.Name, b.now()); n > 0 {
		b.logEvent(eventRotated, g, reason, n)
	}
}

const rotationLogEvery = time.Minute

// eventLog holds, per grant, the rotations not yet logged.
type eventLog struct {
	mu      sync.Mutex
	pending map[string]*rotationTally
}

type rotationTally struct {
	logged time.Time
	count  int
}

// countRotation records a rotation of grant and says how many to log now
// (0: wait).
func (l *eventLog) countRotation(grant string, now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending == nil {
		l.pending = map[string]*rotationTally{}
	}
	t := l.pending[grant]
	if t == nil {
		t = &rotationTally{}
		l.pending[grant] = t
	}
	t.count++
	if !t.logged.IsZero() && now.Sub(t.logged) < rotationLogEvery {
		return 0
	}
	n := t.count
	t.logged, t.count = now, 0
	return n
}

// forgetGrant logs the rotations of g not yet logged and drops its tally:
// the grant is erased.
func (b *backend) forgetGrant(g *grantEntry) {
	if n := b.events.takePending(g.Name, true); n > 0 {
		b.logEvent(eventRotated, g, "use", n)
	}
}

// takePending returns the rotations of grant not yet logged; forget drops
// the grant's tally (it is gone).
func (l *eventLog) takePending(grant string, forget bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.pending[grant]
	if t == nil {
		return 0
	}
	n := t.count
	t.count = 0
	if forget {
		delete(l.pending, grant)
	}
	return n
}

// statusEvents are the events a stored change of status from prev means.
// Becoming active is logged where it happens (eventAuthorized), with how.
func statusEvents(prev string, g *grantEntry) []string {
	var events []string
	if prev == "" {
		events = append(events, eventCreated)
	}
	switch g.Status {
	case statusInvalid:
		events = append(events, eventInvalid)
	case statusExpired:
		if prev != statusExpired {
			events = append(events, eventExpired, eventRevocationQueued)
		}
	case statusRevoking:
		events = append(events, eventRevocationQueued)
	}
	return events
}
